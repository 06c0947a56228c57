"""A lease in SQL: one hub process at a time holds a single-writer role.

With several replicas (one consumer group, one PostgreSQL), every replica runs the
projections, but the patient index must have one writer, or two replicas would decide the
same record differently. Whoever holds the lease decides; it renews the lease as it works,
and another replica takes over once the lease has expired (the holder died or stalled).
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import leases


def acquire(store: Store, name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; True if ``holder`` now holds it."""
    now = time.time()
    with store.begin() as conn:
        conn.execute(dialect_insert(conn, leases).on_conflict_do_nothing(
            index_elements=["name"]), [{"name": name, "holder": holder, "expires": now + ttl}])
        # One statement: two contenders cannot both see the lease as free.
        taken = conn.execute(
            sa.update(leases).where(leases.c.name == name, sa.or_(
                leases.c.holder == holder, leases.c.expires < now))
            .values(holder=holder, expires=now + ttl))
        return taken.rowcount == 1


def holder_of(store: Store, name: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(sa.select(leases.c.holder).where(
            leases.c.name == name, leases.c.expires >= time.time())).scalar()


def release(store: Store, name: str, holder: str) -> None:
    with store.begin() as conn:
        conn.execute(sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder))
