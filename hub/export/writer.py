"""Streaming the shared record to ndjson files, one per resource type, in bounded memory.

Rows come from SQL in partitions of ``PARTITION`` (a server-side cursor on PostgreSQL, the
lazily stepped cursor on SQLite), are presented as the read API presents them (hub-wide
ids and references), optionally de-identified, and appended to the type's file. Memory is
one partition plus the set of patient records already audited (one short string per
patient, never per resource).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa

from hub.export.deidentify import deidentify
from hub.record.projection import TABLE, SharedRecordProjection
from hub.record.read import present_row, present_row_json
from hub.record.rules import ORDER_TIME_AT
from hub.store.db import Store

PARTITION = 1000
_INSTANT = len("2026-01-01T00:00:00.000000Z")
record = SharedRecordProjection().tables(sa.MetaData())[TABLE]


class Cancelled(Exception):
    """The export was cancelled (DELETE on its status, or the hub stopping)."""


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """What one export writes.

    ``patients_only``: only resources in a patient's compartment (the record keys of
    patients, ``<facility>.<id>``), as ``Patient/$export`` asks; else also the facilities'
    own resources (Organization, Practitioner ...). ``facilities``: None for every
    facility's records; ``excluded``: patient records a consent keeps the reader out of;
    ``since``: a UTC instant in the record's order-key form (``rules.utc_instant``).
    """

    types: tuple[str, ...]
    patients_only: bool
    facilities: frozenset[str] | None
    excluded: frozenset[str]
    since: str | None
    secret: bytes | None  # set: de-identify with this key


@dataclass(frozen=True, slots=True)
class Output:
    type: str
    file: str
    count: int


def _where(spec: ExportSpec, rtype: str) -> list:
    where = [record.c.resource_type == rtype, record.c.body.is_not(None)]
    if spec.patients_only:
        where.append(record.c.patient_key.contains("."))
    if spec.facilities is not None:
        where.append(sa.or_(sa.false(), *(
            sa.or_(record.c.patient_key == f, record.c.patient_key.startswith(f"{f}."))
            for f in sorted(spec.facilities))))
    if spec.excluded:
        where.append(record.c.patient_key.not_in(sorted(spec.excluded)))
    if spec.since is not None:
        where.append(sa.func.substr(record.c.order_key, ORDER_TIME_AT, _INSTANT) >= spec.since)
    return where


def write_export(store: Store, spec: ExportSpec, directory: Path,
                 progress: Callable[[str, int], None],
                 audited: Callable[[Collection[str]], None],
                 cancelled: Callable[[], bool]) -> list[Output]:
    """Write ``directory/<Type>.ndjson`` for every type with resources; returns them.

    ``audited`` is called with the patient records of each partition not seen before,
    before that partition is written: the audit trail holds every patient an export
    touched before its manifest exists. Raises Cancelled between partitions.
    """
    directory.mkdir(parents=True, exist_ok=True)
    outputs: list[Output] = []
    seen: set[str] = set()
    written = 0
    for rtype in spec.types:
        path = directory / f"{rtype}.ndjson"
        count = 0
        stmt = (sa.select(record.c.id, record.c.body, record.c.order_key,
                          record.c.patient_key).where(*_where(spec, rtype))
                .order_by(record.c.id))
        with store.connect() as conn, path.open("wb") as out:
            result = conn.execution_options(stream_results=True, yield_per=PARTITION
                                            ).execute(stmt)
            for rows in result.partitions(PARTITION):
                if cancelled():
                    raise Cancelled
                fresh = {r.patient_key for r in rows if "." in r.patient_key} - seen
                if fresh:
                    audited(fresh)
                    seen |= fresh
                out.write(b"".join(_line(r, spec.secret) for r in rows))
                count += len(rows)
                progress(rtype, written + count)
        written += count
        if count:
            outputs.append(Output(rtype, path.name, count))
        else:
            path.unlink()
    return outputs


def _line(row, secret: bytes | None) -> bytes:
    if secret is None:
        return present_row_json(row) + b"\n"
    return orjson.dumps(deidentify(present_row(row), row.patient_key, secret)) + b"\n"


def types_of(asked: Sequence[str], accepted: Sequence[str]) -> tuple[str, ...]:
    """The types an export writes: those asked (``_type``), else every accepted one."""
    return tuple(asked) if asked else tuple(accepted)
