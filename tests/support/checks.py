"""Content checks on stored tables: row counts and an order-independent digest."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from hub.store.db import Store


def table_digest(store: Store, table: str, skip: tuple[str, ...] = ()) -> tuple[int, str]:
    """(rows, sha256 over the sorted rows) of ``table``, ignoring columns in ``skip``."""
    t = sa.Table(table, sa.MetaData(), autoload_with=store.engine)
    cols = [c for c in t.c if c.name not in skip]
    with store.connect() as conn:
        rows = sorted(repr(tuple(r)) for r in conn.execute(sa.select(*cols)))
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()
