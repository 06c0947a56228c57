"""Projection of the shared record: one row per resource, its newest version."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, UpsertRows
from hub.envelope import HUB_SOURCE, SOURCE_PREFIX
from hub.identity import redact_body
from hub.record.rules import delete_order, deleted_version, version_order

TABLE = "record_resources"
_HASHED_OID = b"urn:oid:2.16.156.10011.1."  # national ID and health card systems' prefix
COLUMNS = ("resource_type", "id", "patient_key", "order_key", "body")
KEYS = ("resource_type", "id")


class SharedRecordProjection:
    name = "shared_record"
    # 2: status, last_updated, deleted columns dropped; 3: national IDs hashed; 4: versions
    # ordered by the sender's versionId first (rules.version_order)
    version = 4
    # Idempotent by construction: a re-delivered event carries the same order key, which is
    # not greater than itself, so the guarded upsert is a no-op. No applied-id ledger needed.
    dedupe_by_event_id = False
    # Each event's row depends on that event alone: a rebuild may fold pages on worker
    # processes (hub.engine.rebuild) and write them in journal order.
    parallel_fold = True

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        t = sa.Table(
            TABLE + suffix,
            metadata,
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("id", sa.String(200), primary_key=True),
            sa.Column("patient_key", sa.String(200), nullable=False),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("body", sa.Text),  # NULL: the resource was deleted (a tombstone)
        )
        sa.Index(f"ix_{t.name}_patient", t.c.patient_key, t.c.resource_type)
        return {TABLE: t}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        # The rebuild's hot loop: plain locals, one split, one tuple per event and one
        # change per batch (no per-event dict or Upsert: they cost as much as the parse).
        rows: list[tuple[str, str, str, str, str | None]] = []
        add = rows.append
        prefix = len(SOURCE_PREFIX)
        loads = orjson.loads
        for e in events:
            source = e.source
            if source == HUB_SOURCE:
                continue  # the hub's own records (registry, patient index) live elsewhere
            rtype, rid = e.subject.split("/", 1)
            data = e.data
            if e.type.endswith(".delete.v1"):
                body, okey = None, delete_order(deleted_version(data), e.time)
            else:
                res = loads(data)
                meta = res.get("meta") or {}
                # Stored as received (hub-wide ids are applied on read, rules.present), but
                # for national IDs and health cards, which no projection keeps in clear.
                body = data.decode()
                if rtype == "Patient" and _HASHED_OID in data:
                    body = redact_body(data, res).decode()
                okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time)
            # The sender's version number, then the UTC update time (the read API sorts on
            # it, newest first: rules.version_order); ties (same lastUpdated and versionId,
            # different content: a sender's bug) go to the greater event id, so the result
            # never depends on arrival order.
            add((rtype, f"{source[prefix:]}.{rid}", e.key, f"{okey}|{e.id}", body))
        return [UpsertRows(TABLE, COLUMNS, rows, KEYS, "order_key")] if rows else []
