"""Queries on the shared record (reads only; the projection owns the writes)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from hub.envelope import SOURCE_PREFIX
from hub.ingest.conditions import Condition, Resolution
from hub.record.projection import SharedRecordProjection
from hub.record.rules import NO_VERSION, ORDER_TIME_AT, order_time, present, present_json
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
    return present(row.body, facility, f"{SOURCE_PREFIX}{facility}", order_time(row.order_key))


def present_row_json(row) -> bytes:
    """:func:`present_row` as JSON bytes (the bulk export writes them as they are)."""
    facility = row.id.partition(".")[0]
    return present_json(row.body, facility, f"{SOURCE_PREFIX}{facility}",
                        order_time(row.order_key))


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
           rid: str | None, count: int, offset: int, facilities: frozenset[str] | None = None,
           excluded: Collection[str] = ()) -> tuple[int, list[tuple[dict, str]]]:
    """(total, page of (resource, patient key)) of live resources of a type, newest first,
    optionally for some patients (one person's facility records), only for patients of
    ``facilities`` and never for the ``excluded`` records (a consent keeps the reader out)."""
    where = [_table.c.resource_type == resource_type, _table.c.body.is_not(None)]
    if patient_keys is not None:
        where.append(_table.c.patient_key.in_(list(patient_keys)))
    if rid is not None:
        where.append(_table.c.id == rid)
    if facilities is not None:
        where.append(sa.or_(sa.false(), *(
            sa.or_(_table.c.patient_key == f, _table.c.patient_key.startswith(f"{f}."))
            for f in sorted(facilities))))
    if excluded:
        where.append(_table.c.patient_key.not_in(sorted(excluded)))
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(_table).where(*where)
                             ).scalar_one()
        rows = conn.execute(
            sa.select(*_shown, _table.c.patient_key).where(*where)
            .order_by(sa.func.substr(_table.c.order_key, ORDER_TIME_AT).desc(), _table.c.id)
            .limit(count).offset(offset)
        ).all()
    return total, [(present_row(r), r.patient_key) for r in rows]


def _identifier_matches(body: str, system: str | None, value: str) -> bool:
    res = orjson.loads(body)
    return any(isinstance(i, dict) and i.get("value") == value
               and (system is None or i.get("system") == system)
               for i in res.get("identifier") or ())


def resolve_conditions(store: Store, facility_id: str,
                       asked: Mapping[int, Sequence[Condition]]) -> dict[int, Resolution]:
    """The shared record's answers to a Bundle's conditions (by entry index), among the
    facility's own live resources, as projected when asked: identifier matches for
    conditional create and update, the current versionId for ``ifMatch`` (a resource stored
    without one is version "1", as the gateway's ETag says)."""
    out: dict[int, Resolution] = {}
    prefix = f"{facility_id}."
    with store.connect() as conn:
        for i, conditions in asked.items():
            matches: tuple[str, ...] = ()
            version = None
            for c in conditions:
                if c.value is not None:
                    # The body holds the value as JSON text; the LIKE narrows, the parse decides.
                    needle = orjson.dumps(c.value).decode()
                    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%") \
                        .replace("_", "\\_") + "%"
                    rows = conn.execute(sa.select(_table.c.id, _table.c.body).where(
                        _table.c.resource_type == c.rtype, _table.c.id.startswith(prefix),
                        _table.c.body.is_not(None),
                        _table.c.body.like(pattern, escape="\\"))).all()
                    matches = tuple(sorted(r.id.removeprefix(prefix) for r in rows
                                           if _identifier_matches(r.body, c.system, c.value)))
                if c.target is not None:
                    body = conn.execute(sa.select(_table.c.body).where(
                        _table.c.resource_type == c.rtype,
                        _table.c.id == prefix + c.target.removeprefix(prefix))).scalar()
                    if body is not None:
                        meta = orjson.loads(body).get("meta") or {}
                        version = str(meta.get("versionId") or "1")
            out[i] = Resolution(matches, version)
    return out


def live_version(store: Store, resource_type: str, rid: str) -> tuple[str, str | None] | None:
    """(patient key, the sender's numeric versionId or None) of a live resource; None if the
    record holds no live resource under that id."""
    with store.connect() as conn:
        row = conn.execute(sa.select(_table.c.patient_key, _table.c.order_key).where(
            _table.c.resource_type == resource_type, _table.c.id == rid,
            _table.c.body.is_not(None))).first()
    if row is None:
        return None
    number = row.order_key.partition("|")[0]
    return row.patient_key, (None if number == NO_VERSION else str(int(number)))
