"""Shared lab results: every facility's lab Observations and DiagnosticReports, one row per
resource (its newest version), normalised for reading across facilities.

Also writes the change feed's outbox in the same transaction: one message per lab event, which
the outbox relay publishes to ``hie.lab.v1`` (``hub.engine.outbox``). The message carries the
version's order key, so a consumer applies only what is newer, as this projection does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE
from hub.lab.rules import (
    SHOWN,
    LabResult,
    effective_of,
    is_lab_observation,
    is_lab_report,
    lab_result,
    loinc_of,
)
from hub.record.rules import delete_order, deleted_version, version_order
from hub.store.schema import outbox_table

RESULTS, REPORTS, FEED = "lab_result", "lab_report", "lab_feed"
_FIELDS = tuple(f.name for f in fields(LabResult))
FEED_TYPE = "hie.lab.result.v1"


class LabProjection:
    name = "lab"
    version = 2  # 2: versions ordered by the sender's versionId first (record.rules)

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        s = suffix
        results = sa.Table(
            RESULTS + s, metadata,
            sa.Column("id", sa.String(200), primary_key=True),
            sa.Column("patient_key", sa.String(200), nullable=False),
            sa.Column("analyte", sa.String(100), nullable=False),
            sa.Column("loinc", sa.String(20)),
            sa.Column("display", sa.String(200), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("visible", sa.Boolean, nullable=False),
            sa.Column("effective", sa.String(40)),
            sa.Column("value_num", sa.Float),
            sa.Column("value_text", sa.Text),
            sa.Column("unit", sa.String(40)),
            sa.Column("value_norm", sa.Float),
            sa.Column("unit_norm", sa.String(40)),
            sa.Column("flag", sa.String(4)),
            sa.Column("flag_source", sa.String(20)),
            sa.Column("ref_low", sa.Float),
            sa.Column("ref_high", sa.Float),
            sa.Column("specimen", sa.String(200)),
            sa.Column("performer", sa.String(64)),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("body", sa.Text),
        )
        sa.Index(f"ix_{results.name}_patient", results.c.patient_key, results.c.analyte,
                 results.c.effective)
        reports = sa.Table(
            REPORTS + s, metadata,
            sa.Column("id", sa.String(200), primary_key=True),
            sa.Column("patient_key", sa.String(200), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("visible", sa.Boolean, nullable=False),
            sa.Column("loinc", sa.String(20)),
            sa.Column("display", sa.String(200), nullable=False),
            sa.Column("effective", sa.String(40)),
            sa.Column("performer", sa.String(64)),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("body", sa.Text),
        )
        sa.Index(f"ix_{reports.name}_patient", reports.c.patient_key, reports.c.effective)
        feed = outbox_table(FEED + s, metadata)
        return {RESULTS: results, REPORTS: reports, FEED: feed}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            rtype = e.resource_type
            if e.source == HUB_SOURCE or rtype not in ("Observation", "DiagnosticReport"):
                continue
            rid = f"{e.facility_id}.{e.resource_id}"
            if e.is_delete:
                okey = delete_order(deleted_version(e.data), e.time) + f"|{e.id}"
                table = RESULTS if rtype == "Observation" else REPORTS
                row = {"id": rid, "visible": False, "status": "deleted", "order_key": okey,
                       "body": None, "patient_key": e.key, "display": ""}
                if table == RESULTS:
                    row["analyte"] = ""
                out.append(Upsert(table, row, ("id",), guard="order_key"))
                out.append(_feed(e, rid, {"status": "deleted", "visible": False}, okey))
                continue
            res = orjson.loads(e.data)
            meta = res.get("meta") or {}
            okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time) + \
                f"|{e.id}"
            if rtype == "Observation":
                if not is_lab_observation(res):
                    continue
                r = lab_result(res, e.facility_id)
                values = {f: getattr(r, f) for f in _FIELDS}  # asdict() deep-copies: slow
                row = {"id": rid, "patient_key": e.key, **values, "order_key": okey,
                       "body": e.data.decode()}
                out.append(Upsert(RESULTS, row, ("id",), guard="order_key"))
                out.append(_feed(e, rid, values, okey))
            elif is_lab_report(res):
                loinc, display = loinc_of(res.get("code"))
                status = res.get("status") or "unknown"
                performer = next((p["reference"].split("/", 1)[1]
                                  for p in res.get("performer") or ()
                                  if str(p.get("reference", "")).startswith("Organization/")),
                                 e.facility_id)
                out.append(Upsert(REPORTS, {
                    "id": rid, "patient_key": e.key, "status": status,
                    "visible": status in SHOWN or status in ("partial", "appended"),
                    "loinc": loinc, "display": display, "effective": effective_of(res),
                    "performer": performer, "order_key": okey, "body": e.data.decode()},
                    ("id",), guard="order_key"))
        return out


def _feed(e: Event, rid: str, fields: dict, order_key: str) -> Upsert:
    payload = {"type": FEED_TYPE, "id": f"lab-{e.id}", "resource": f"Observation/{rid}",
               "patient": e.key, "version": order_key, "source_event": e.id, **fields}
    return Upsert(FEED, {"feed_id": payload["id"], "patient_key": e.key,
                         "payload": orjson.dumps(payload), "sent": False},
                  ("feed_id",), replace=False)
