"""Questions to the imaging projection: the worklist, claims, turnaround, history."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub import clock
from hub.clock import CONSORTIUM_TZ
from hub.imaging import rules
from hub.imaging.projection import (
    CLAIMS,
    FIRST,
    HISTORY,
    REPORTS,
    REQUESTS,
    STUDIES,
    ImagingProjection,
)
from hub.registry.model import FacilityRecord
from hub.store.db import Store, plain

T = ImagingProjection().tables(sa.MetaData())


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def routed_to(registry: dict[str, FacilityRecord], centre: str, service: str) -> list[str]:
    """The facilities whose ``service`` exams ``centre`` reads, per the registry."""
    return sorted(r.id for r in registry.values() if r.reading_centre(service) == centre)


def worklist(store: Store, registry: dict[str, FacilityRecord], centre: str,
             services: Sequence[str] = ("imaging", "ecg", "pathology"),
             now: datetime | None = None) -> list[dict]:
    """Unreported studies routed to ``centre``: priority first, then arrival."""
    return worklists(store, registry, [centre], services, now)[centre]


def worklists(store: Store, registry: dict[str, FacilityRecord], centres: Sequence[str],
              services: Sequence[str] = ("imaging", "ecg", "pathology"),
              now: datetime | None = None) -> dict[str, list[dict]]:
    """The worklist of each of ``centres`` from one query (the console shows every centre's
    counts on one page)."""
    now = now or clock.now()
    route: dict[tuple[str, str], str] = {}  # (service, facility) -> the centre reading it
    for centre in centres:
        for svc in services:
            for facility in routed_to(registry, centre, svc):
                route[(svc, facility)] = centre
    s, q, c, r = T[STUDIES], T[REQUESTS], T[CLAIMS], T[REPORTS]
    routes = sa.or_(sa.false(), *(sa.and_(s.c.service == svc, s.c.facility.in_(
        sorted(f for (sv, f) in route if sv == svc))) for svc in services))
    stmt = (sa.select(s.c.study_id, s.c.patient_key, s.c.facility, s.c.service, s.c.modality,
                      s.c.arrived, s.c.started, s.c.description, s.c.study_uid, s.c.endpoint,
                      q.c.priority, c.c.reader, c.c.reader_facility, c.c.expires,
                      r.c.status.label("report_status"))
            .select_from(s.outerjoin(q, q.c.study_id == s.c.study_id)
                         .outerjoin(c, c.c.study_id == s.c.study_id)
                         .outerjoin(r, r.c.study_id == s.c.study_id))
            .where(routes, s.c.status.in_(rules.SHOWN_STUDY),
                   sa.or_(r.c.status.is_(None), r.c.status.not_in(rules.REPORTED))))
    with store.connect() as conn:
        rows = [plain(m) for m in conn.execute(stmt).mappings()]
    stamp = now.isoformat().replace("+00:00", "Z")
    out: dict[str, list[dict]] = {centre: [] for centre in centres}
    for row in rows:
        centre = route.get((row["service"], row["facility"]))
        if centre is None:
            continue
        priority = row["priority"] or "routine"
        # The clock starts at acquisition: what the patient waits for, whatever the upload delay.
        due = rules.due(row["started"] or row["arrived"], priority)
        claimed = row["expires"] is not None and row["expires"] > stamp
        item = {k: row[k] for k in ("study_id", "patient_key", "facility", "service",
                                    "modality", "arrived", "started", "description",
                                    "study_uid", "endpoint", "report_status")}
        item.update(priority=priority, due=due.isoformat(), breached=now > due,
                    claim={"reader": row["reader"], "facility": row["reader_facility"],
                           "expires": row["expires"]} if claimed else None)
        out[centre].append(item)
    for items in out.values():
        items.sort(key=lambda w: (rules.RANK.get(w["priority"], 9), w["arrived"],
                                  w["study_id"]))
    return out


def study(store: Store, study_id: str) -> dict | None:
    s = T[STUDIES]
    with store.connect() as conn:
        found = conn.execute(sa.select(s).where(s.c.study_id == study_id)).mappings().first()
    return plain(found) if found else None


def claim(store: Store, study_id: str) -> dict | None:
    c = T[CLAIMS]
    with store.connect() as conn:
        found = conn.execute(sa.select(c).where(c.c.study_id == study_id)).mappings().first()
    return plain(found) if found else None


def turnaround(store: Store, by: str, since: str | None = None,
               per_day: bool = True) -> list[dict]:
    """Acquisition -> first report, in minutes: p50 and p90 per ``by`` (centre, facility,
    modality, or ``centre+modality``) and consortium day of acquisition (``day`` is "all"
    without ``per_day``)."""
    s, f = T[STUDIES], T[FIRST]
    stmt = (sa.select(s.c.facility, s.c.modality, s.c.started, s.c.arrived,
                      f.c.reader_facility, f.c.issued)
            .select_from(s.join(f, f.c.study_id == s.c.study_id)))
    if since:
        stmt = stmt.where(s.c.arrived >= since)
    groups: dict[tuple[str, str], list[float]] = {}
    with store.connect() as conn:
        for row in conn.execute(stmt).mappings():
            start = _instant(row["started"] or row["arrived"])
            minutes = (_instant(row["issued"]) - start).total_seconds() / 60
            key = {"centre": row["reader_facility"], "facility": row["facility"],
                   "modality": row["modality"],
                   "centre+modality": f"{row['reader_facility']} {row['modality']}"}[by]
            day = start.astimezone(CONSORTIUM_TZ).date().isoformat() if per_day else "all"
            groups.setdefault((key, day), []).append(minutes)
    return [{by: k, "day": day, "reports": len(v),
             "p50_minutes": round(rules.percentile(v, 50) or 0, 1),
             "p90_minutes": round(rules.percentile(v, 90) or 0, 1)}
            for (k, day), v in sorted(groups.items())]


def history(store: Store, patient_keys: Sequence[str]) -> list[dict]:
    """Every study of these records, newest first, each with its current report and the
    report's earlier versions."""
    s, r, h = T[STUDIES], T[REPORTS], T[HISTORY]
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(s.c.study_id, s.c.facility, s.c.modality, s.c.started, s.c.description,
                      s.c.study_uid, s.c.endpoint, r.c.report_id, r.c.status, r.c.conclusion,
                      r.c.issued, r.c.reader_facility)
            .select_from(s.outerjoin(r, r.c.study_id == s.c.study_id))
            .where(s.c.patient_key.in_(list(patient_keys)),
                   s.c.status.in_(rules.SHOWN_STUDY))
            .order_by(s.c.started.desc(), s.c.study_id)).mappings().all()
        versions = conn.execute(
            sa.select(h.c.study_id, h.c.report_id, h.c.status, h.c.body)
            .where(h.c.study_id.in_([row["study_id"] for row in rows]))
            .order_by(h.c.order_key)).mappings().all()
    earlier: dict[str, list[dict]] = {}
    for v in versions:
        body = orjson.loads(v["body"])
        earlier.setdefault(v["study_id"], []).append(
            {"status": v["status"], "conclusion": body.get("conclusion"),
             "issued": body.get("issued")})
    return [{**plain(row), "report_history": earlier.get(row["study_id"], [])}
            for row in rows]


def search_reports(store: Store, patient_keys: Sequence[str] | None, count: int, offset: int,
                   facilities: frozenset[str] | None = None, excluded: Collection[str] = ()
                   ) -> tuple[int, list]:
    """Current imaging/ECG reports on these patients' studies (wherever they were read),
    newest first: (total, page of (resource with hub ids, patient key))."""
    from hub.envelope import SOURCE_PREFIX
    from hub.record.rules import order_time, present

    s, r = T[STUDIES], T[REPORTS]
    where = [s.c.status.in_(rules.SHOWN_STUDY)]
    if patient_keys is not None:
        where.append(s.c.patient_key.in_(list(patient_keys)))
    if facilities is not None:
        where.append(s.c.facility.in_(sorted(facilities)))
    if excluded:  # records a patient's consent keeps the reader out of
        where.append(s.c.patient_key.not_in(sorted(excluded)))
    joined = s.join(r, r.c.study_id == s.c.study_id)
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(joined).where(*where)
                             ).scalar_one()
        rows = conn.execute(sa.select(r.c.report_id, r.c.order_key, r.c.body, s.c.patient_key)
                            .select_from(joined).where(*where)
                            .order_by(r.c.issued.desc(), r.c.report_id)
                            .limit(count).offset(offset)).all()
    out = []
    for report_id, order_key, body, patient_key in rows:
        facility = report_id.partition(".")[0]
        res = present(body, facility, f"{SOURCE_PREFIX}{facility}",
                      order_time(order_key))
        out.append((res, patient_key))
    return total, out


def unmatched_reports(store: Store, reader_facility: str | None = None) -> list[dict]:
    """Reports naming a study the hub has never received: kept (nothing is lost) and listed
    here until the study arrives, so the reading centre can correct the reference."""
    s, r = T[STUDIES], T[REPORTS]
    stmt = (sa.select(r.c.study_id, r.c.report_id, r.c.reader_facility, r.c.status, r.c.issued)
            .select_from(r.outerjoin(s, s.c.study_id == r.c.study_id))
            .where(s.c.study_id.is_(None)).order_by(r.c.issued))
    if reader_facility:
        stmt = stmt.where(r.c.reader_facility == reader_facility)
    with store.connect() as conn:
        return [plain(m) for m in conn.execute(stmt).mappings()]
