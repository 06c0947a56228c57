"""Queries on the shared record (reads only; the projection owns the writes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from hub.envelope import SOURCE_PREFIX
from hub.record.projection import SharedRecordProjection
from hub.record.rules import present
from hub.store.db import Store

_table = SharedRecordProjection().tables(sa.MetaData())["record_resources"]


@dataclass(frozen=True)
class Found:
    resource: dict | None
    deleted: bool
    patient_key: str


_shown = (_table.c.body, _table.c.id, _table.c.order_key)


def present_row(row) -> dict:
    facility = row.id.partition(".")[0]
    # order_key begins with the update instant: "<UTC ISO instant>|<version>|<event id>"
    last_updated = row.order_key.partition("|")[0]
    return present(row.body, facility, f"{SOURCE_PREFIX}{facility}", last_updated)


def get_resource(store: Store, resource_type: str, rid: str) -> Found | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(*_shown, _table.c.patient_key).where(
            _table.c.resource_type == resource_type, _table.c.id == rid)).first()
    if row is None:
        return None
    deleted = row.body is None
    return Found(None if deleted else present_row(row), deleted, row.patient_key)


def current_patient_key(store: Store, resource_type: str, rid: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(sa.select(_table.c.patient_key).where(
            _table.c.resource_type == resource_type, _table.c.id == rid,
            _table.c.body.is_not(None))).scalar()


def search(store: Store, resource_type: str, patient_keys: Sequence[str] | None,
           rid: str | None, count: int, offset: int, facilities: frozenset[str] | None = None
           ) -> tuple[int, list[tuple[dict, str]]]:
    """(total, page of (resource, patient key)) of live resources of a type, newest first,
    optionally for some patients (one person's facility records) and only for patients of
    ``facilities``."""
    where = [_table.c.resource_type == resource_type, _table.c.body.is_not(None)]
    if patient_keys is not None:
        where.append(_table.c.patient_key.in_(list(patient_keys)))
    if rid is not None:
        where.append(_table.c.id == rid)
    if facilities is not None:
        where.append(sa.or_(sa.false(), *(
            sa.or_(_table.c.patient_key == f, _table.c.patient_key.startswith(f"{f}."))
            for f in sorted(facilities))))
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(_table).where(*where)
                             ).scalar_one()
        rows = conn.execute(
            sa.select(*_shown, _table.c.patient_key).where(*where)
            .order_by(_table.c.order_key.desc(), _table.c.id).limit(count).offset(offset)
        ).all()
    return total, [(present_row(r), r.patient_key) for r in rows]
