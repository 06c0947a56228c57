"""Projection of the shared record: one row per resource, its newest version."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.record.rules import hub_id, namespace, order_key, utc_instant

TABLE = "record_resources"


class SharedRecordProjection:
    name = "shared_record"
    version = 1

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        t = sa.Table(
            TABLE + suffix,
            metadata,
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("id", sa.String(200), primary_key=True),
            sa.Column("facility", sa.String(64), nullable=False),
            sa.Column("patient_key", sa.String(200), nullable=False),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("last_updated", sa.String(40), nullable=False),
            sa.Column("status", sa.String(40)),
            sa.Column("deleted", sa.Boolean, nullable=False),
            sa.Column("event_id", sa.String(200), nullable=False),
            sa.Column("body", sa.Text),
        )
        sa.Index(f"ix_{t.name}_patient", t.c.patient_key, t.c.resource_type)
        return {TABLE: t}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            facility = e.facility_id
            if e.is_delete:
                row = {"status": None, "deleted": True, "body": None,
                       "order_key": order_key({}, e.time), "last_updated": utc_instant(e.time)}
            else:
                res = e.resource()
                ns = namespace(res, facility)
                meta = ns.setdefault("meta", {})
                meta.setdefault("lastUpdated", e.time)
                # Provenance in the record itself: which facility published it.
                meta["source"] = e.source
                row = {"status": res.get("status"), "deleted": False,
                       "body": orjson.dumps(ns).decode(), "order_key": order_key(res, e.time),
                       "last_updated": utc_instant(meta["lastUpdated"])}
            # Ties (same lastUpdated and versionId, different content: a sender's bug) go to
            # the greater event id, so the result never depends on arrival order.
            row["order_key"] = f"{row['order_key']}|{e.id}"
            row.update(resource_type=e.resource_type, id=hub_id(facility, e.resource_id),
                       facility=facility, patient_key=e.key, event_id=e.id)
            out.append(Upsert(TABLE, row, keys=("resource_type", "id"), guard="order_key"))
        return out
