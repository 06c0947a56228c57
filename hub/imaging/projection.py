"""The reading worklist, reports and turnaround, folded from the log.

Studies come from the acquiring facility (ImagingStudy), reading requests set the priority
(ServiceRequest with ``supportingInfo`` naming the study), claims are Tasks from the reading
centre, reports are DiagnosticReports referencing the study (by its hub id). Claims are
settled by log order: a claim takes the study only if it was made after the current claim
expired (``guard_against``), so two readers can never both hold a study, and a rebuild
settles them the same way. Reports keep their history; the current one is the newest
version. Each report version also goes to the ``hie.imaging.v1`` outbox for the originating
facility.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from adapters.apps.feeds import ImagingReport
from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE
from hub.imaging import rules
from hub.record.rules import utc_instant, version_order
from hub.store.schema import outbox_table

FEED_TYPE = "hie.imaging.report.v1"
STUDIES, REQUESTS, CLAIMS, REPORTS, FIRST, HISTORY, FEED = (
    "img_study", "img_request", "img_claim", "img_report", "img_first_report",
    "img_report_history", "img_feed")


class ImagingProjection:
    name = "imaging"
    version = 2  # 2: versions ordered by the sender's versionId first (record.rules)

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        s = suffix
        text = sa.String(200)
        studies = sa.Table(
            STUDIES + s, metadata,
            sa.Column("study_id", text, primary_key=True),
            sa.Column("patient_key", text, nullable=False),
            sa.Column("facility", sa.String(64), nullable=False),
            sa.Column("service", sa.String(20), nullable=False),
            sa.Column("modality", sa.String(40), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("arrived", sa.String(40), nullable=False),
            sa.Column("started", sa.String(40)),
            sa.Column("description", sa.Text),
            sa.Column("study_uid", sa.String(70)),
            sa.Column("series", sa.Integer),
            sa.Column("instances", sa.Integer),
            sa.Column("endpoint", text),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        sa.Index(f"ix_{studies.name}_patient", studies.c.patient_key)
        requests = sa.Table(
            REQUESTS + s, metadata,
            sa.Column("study_id", text, primary_key=True),
            sa.Column("request_id", text, nullable=False),
            sa.Column("priority", sa.String(10), nullable=False),
            sa.Column("order_key", sa.String(320), nullable=False),
        )
        claims = sa.Table(
            CLAIMS + s, metadata,
            sa.Column("study_id", text, primary_key=True),
            sa.Column("task_id", text, nullable=False),
            sa.Column("reader", text, nullable=False),
            sa.Column("reader_facility", sa.String(64), nullable=False),
            sa.Column("claimed_at", sa.String(40), nullable=False),
            sa.Column("expires", sa.String(40), nullable=False),
        )
        reports = sa.Table(
            REPORTS + s, metadata,
            sa.Column("study_id", text, primary_key=True),
            sa.Column("report_id", text, nullable=False),
            sa.Column("reader_facility", sa.String(64), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("conclusion", sa.Text),
            sa.Column("issued", sa.String(40)),
            sa.Column("order_key", sa.String(320), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        first = sa.Table(
            FIRST + s, metadata,
            sa.Column("study_id", text, primary_key=True),
            sa.Column("report_id", text, nullable=False),
            sa.Column("reader_facility", sa.String(64), nullable=False),
            sa.Column("issued", sa.String(40), nullable=False),
        )
        history = sa.Table(
            HISTORY + s, metadata,
            sa.Column("report_id", text, primary_key=True),
            sa.Column("order_key", sa.String(320), primary_key=True),
            sa.Column("study_id", text, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        feed = outbox_table(FEED + s, metadata)
        return {STUDIES: studies, REQUESTS: requests, CLAIMS: claims, REPORTS: reports,
                FIRST: first, HISTORY: history, FEED: feed}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            rtype = e.resource_type
            if e.source == HUB_SOURCE or e.is_delete or rtype not in (
                    "ImagingStudy", "ServiceRequest", "Task", "DiagnosticReport"):
                continue
            res = orjson.loads(e.data)
            meta = res.get("meta") or {}
            okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time) + \
                f"|{e.id}"
            sender = e.facility_id
            if rtype == "ImagingStudy":
                out += _study(e, res, sender, okey)
            elif rtype == "ServiceRequest":
                for ref in res.get("supportingInfo") or ():
                    sid = rules.hub_ref(ref.get("reference"), sender, "ImagingStudy")
                    if sid:
                        priority = res.get("priority") or "routine"
                        out.append(Upsert(REQUESTS, {
                            "study_id": sid, "request_id": f"{sender}.{res['id']}",
                            "priority": priority if priority in rules.RANK else "routine",
                            "order_key": okey}, ("study_id",), guard="order_key"))
            elif rtype == "Task" and rules.is_claim(res) and res.get("status") in (
                    "in-progress", "accepted", "requested"):
                sid = rules.hub_ref((res.get("focus") or {}).get("reference"), sender,
                                    "ImagingStudy")
                expires = rules.claim_expiry(res)
                if sid and expires:
                    out.append(Upsert(CLAIMS, {
                        "study_id": sid, "task_id": f"{sender}.{res['id']}",
                        "reader": (res.get("owner") or {}).get("display") or sender,
                        "reader_facility": sender, "claimed_at": e.time,
                        "expires": utc_instant(expires)},
                        ("study_id",), guard="claimed_at", guard_against="expires"))
            elif rtype == "DiagnosticReport" and rules.is_imaging_report(res):
                out += _report(e, res, sender, okey)
        return out


def _study(e: Event, res: dict, sender: str, okey: str) -> list[Change]:
    codes = rules.modalities(res)
    endpoint = next((x.get("reference") for x in res.get("endpoint") or ()), None)
    return [Upsert(STUDIES, {
        "study_id": f"{sender}.{res['id']}", "patient_key": e.key, "facility": sender,
        "service": rules.service_for(codes), "modality": ",".join(dict.fromkeys(codes)),
        "status": res.get("status") or "unknown", "arrived": e.time,
        "started": utc_instant(res["started"]) if res.get("started") else None,
        "description": res.get("description"), "study_uid": rules.study_uid(res),
        "series": res.get("numberOfSeries"), "instances": res.get("numberOfInstances"),
        "endpoint": endpoint, "order_key": okey, "body": e.data.decode()},
        ("study_id",), guard="order_key")]


def _report(e: Event, res: dict, sender: str, okey: str) -> list[Change]:
    out: list[Change] = []
    rid = f"{sender}.{res['id']}"
    status = res.get("status") or "unknown"
    issued = utc_instant(res["issued"]) if res.get("issued") else e.time
    for ref in res.get("imagingStudy") or ():
        sid = rules.hub_ref(ref.get("reference"), sender, "ImagingStudy")
        if not sid:
            continue
        out.append(Upsert(REPORTS, {
            "study_id": sid, "report_id": rid, "reader_facility": sender, "status": status,
            "conclusion": res.get("conclusion"), "issued": issued, "order_key": okey,
            "body": e.data.decode()}, ("study_id",), guard="order_key"))
        out.append(Upsert(HISTORY, {"report_id": rid, "order_key": okey, "study_id": sid,
                                    "status": status, "body": e.data.decode()},
                          ("report_id", "order_key"), replace=False))
        if status in rules.REPORTED:
            out.append(Upsert(FIRST, {"study_id": sid, "report_id": rid,
                                      "reader_facility": sender, "issued": issued},
                              ("study_id",), replace=False))
        message = ImagingReport(
            type=FEED_TYPE, id=f"img-{e.id}-{sid}", study=f"ImagingStudy/{sid}",
            facility=sid.split(".", 1)[0], patient=e.key, report=f"DiagnosticReport/{rid}",
            status=status, conclusion=res.get("conclusion"), issued=issued,
            reader_facility=sender, version=okey, source_event=e.id)
        # Keyed by the originating facility: its system reads its own reports back.
        out.append(Upsert(FEED, {"feed_id": message.id, "patient_key": message.facility,
                                 "payload": message.model_dump_json().encode(),
                                 "sent": False}, ("feed_id",), replace=False))
    return out
