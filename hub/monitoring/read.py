"""Reading the monitoring projection: a team's worklist, a resident's status, one alert."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from hub import clock
from hub.monitoring import projection as mp
from hub.monitoring.rules import ALERT_KINDS, STATUS_RANK, Reading, Thresholds, evaluate
from hub.store.db import Store

_T = mp.MonitoringProjection().tables(sa.MetaData())
READINGS, ENROL, ALERTS, STATES, ESC, REFS, TEAMS, DEVICES = (
    _T[mp.READINGS], _T[mp.ENROLMENTS], _T[mp.ALERTS], _T[mp.STATES], _T[mp.ESCALATIONS],
    _T[mp.REFERRALS], _T[mp.TEAMS], _T[mp.DEVICES])
_KIND_ORDER = {k: i for i, k in enumerate(ALERT_KINDS)}


def _alerts_query() -> sa.Select:
    return (sa.select(ALERTS, STATES.c.status, STATES.c.by_facility, STATES.c.by_who,
                      STATES.c.at.label("status_at"), ESC.c.to_facility.label("escalated_to"),
                      ESC.c.at.label("escalated_at"), ESC.c.reason.label("escalation_reason"),
                      REFS.c.service_request, REFS.c.task.label("referral_task"),
                      TEAMS.c.facility.label("team_facility"), TEAMS.c.specialist)
            .select_from(ALERTS.join(STATES, STATES.c.alert_id == ALERTS.c.alert_id)
                         .outerjoin(ESC, ESC.c.alert_id == ALERTS.c.alert_id)
                         .outerjoin(REFS, REFS.c.alert_id == ALERTS.c.alert_id)
                         .outerjoin(TEAMS, TEAMS.c.team_id == ALERTS.c.team_id)))


def _public(row: sa.RowMapping, now: datetime, sla_hours: float) -> dict[str, Any]:
    due = datetime.fromisoformat(row["opened"].replace("Z", "+00:00")) + timedelta(
        hours=sla_hours)
    return {
        "id": row["alert_id"], "alert": f"DetectedIssue/{row['alert_id']}",
        "patient": f"Patient/{row['patient_key']}", "patient_key": row["patient_key"],
        "team": row["team_id"], "kind": row["kind"], "severity": row["severity"],
        "reason": row["reason"], "readings": orjson.loads(row["readings"]),
        "opened": row["opened"], "status": row["status"],
        "status_by": row["by_who"] or row["by_facility"], "status_at": row["status_at"],
        "sla_due": due.isoformat().replace("+00:00", "Z"),
        "breached": row["status"] == "open" and now >= due,
        "escalated_to": row["escalated_to"], "escalated_at": row["escalated_at"],
        "escalation_reason": row["escalation_reason"],
        "referral": f"ServiceRequest/{row['service_request']}" if row["service_request"]
        else None,
        "team_facility": row["team_facility"], "specialist": row["specialist"]}


def worklist(store: Store, sla_hours: float, *, teams: list[str] | None = None,
             escalated_to: str | None = None, statuses: tuple[str, ...] = ("open",
                                                                           "acknowledged"),
             limit: int = 500) -> list[dict[str, Any]]:
    """Alerts of ``teams`` (or escalated to a specialist facility) in ``statuses``: open
    before acknowledged, critical first, then oldest first."""
    q = _alerts_query().where(STATES.c.status.in_(statuses))
    if teams is not None:
        q = q.where(ALERTS.c.team_id.in_(teams))
    if escalated_to is not None:
        q = q.where(ESC.c.to_facility == escalated_to)
    with store.connect() as conn:
        rows = conn.execute(q.limit(limit * 4)).mappings().all()
    now = clock.now()
    items = [_public(r, now, sla_hours) for r in rows]
    items.sort(key=lambda a: (STATUS_RANK[a["status"]], a["severity"] != "high",
                              _KIND_ORDER.get(a["kind"], 9), a["opened"]))
    return items[:limit]


def alert(store: Store, alert_id: str, sla_hours: float) -> dict[str, Any] | None:
    with store.connect() as conn:
        row = conn.execute(_alerts_query().where(ALERTS.c.alert_id == alert_id)
                           ).mappings().first()
    return _public(row, clock.now(), sla_hours) if row else None


def teams_of(store: Store, facility: str) -> list[str]:
    """The teams a facility runs (from the log: the registry's CareTeam events)."""
    with store.connect() as conn:
        return list(conn.execute(sa.select(TEAMS.c.team_id).where(
            TEAMS.c.facility == facility, TEAMS.c.status == "active")).scalars())


def patient_status(store: Store, patient_key: str, th: Thresholds, sla_hours: float,
                   limit: int = 20) -> dict[str, Any]:
    """A resident's enrolment, newest readings, what the rules say now, and alerts."""
    with store.connect() as conn:
        enrol = conn.execute(sa.select(ENROL).where(
            ENROL.c.patient_key == patient_key).order_by(
            ENROL.c.status)).mappings().first()
        rows = conn.execute(sa.select(READINGS).where(
            READINGS.c.patient_key == patient_key).order_by(
            READINGS.c.measured.desc()).limit(max(limit, 50))).mappings().all()
        alerts = conn.execute(_alerts_query().where(
            ALERTS.c.patient_key == patient_key)).mappings().all()
        devices = list(conn.execute(sa.select(DEVICES.c.device_id, DEVICES.c.kind).where(
            DEVICES.c.patient_key == patient_key, DEVICES.c.status == "active")).all())
    diabetic = bool(enrol and enrol["diabetic"])
    found = evaluate([Reading(r["reading_id"], r["kind"], r["measured"], r["sbp"], r["dbp"],
                              r["glucose"], r["fasting"]) for r in rows], diabetic, th)
    now = clock.now()
    return {
        "patient": f"Patient/{patient_key}",
        "enrolment": None if enrol is None else {
            "team": enrol["team_id"], "diabetic": diabetic, "signed": enrol["signed"],
            "status": enrol["status"]},
        "devices": [{"id": d.device_id, "kind": d.kind} for d in devices],
        "controlled": not found,
        "findings": [{"kind": f.kind, "reason": f.reason, "readings": list(f.readings)}
                     for f in found],
        "readings": [{"id": r["reading_id"], "kind": r["kind"], "measured": r["measured"],
                      "device": r["device_id"], "sbp": r["sbp"], "dbp": r["dbp"],
                      "glucose": r["glucose"], "fasting": r["fasting"]}
                     for r in rows[:limit]],
        "alerts": sorted((_public(a, now, sla_hours) for a in alerts),
                         key=lambda a: a["opened"], reverse=True)}


def counts(store: Store) -> dict[str, int]:
    """Alerts per status, readings, escalations, referrals: for the demo's summary."""
    with store.connect() as conn:
        by_status = dict(conn.execute(sa.select(STATES.c.status, sa.func.count()).group_by(
            STATES.c.status)).all())
        out = {s: int(by_status.get(s, 0)) for s in STATUS_RANK}
        out["readings"] = conn.execute(sa.select(sa.func.count()).select_from(READINGS)
                                       ).scalar() or 0
        out["escalated"] = conn.execute(sa.select(sa.func.count()).select_from(ESC)
                                        ).scalar() or 0
        out["referred"] = conn.execute(sa.select(sa.func.count()).select_from(REFS)
                                       ).scalar() or 0
    return out


def alerts_by_team(store: Store, sla_hours: float) -> list[dict[str, Any]]:
    """Per team: its facility, open and acknowledged alerts, open ones past their SLA, and
    escalated ones; no patient named (the web console's summary)."""
    due_before = clock.rfc3339(clock.now() - timedelta(hours=sla_hours))
    status = STATES.c.status
    q = (sa.select(ALERTS.c.team_id, TEAMS.c.facility,
                   sa.func.sum(sa.case((status == "open", 1), else_=0)),
                   sa.func.sum(sa.case((status == "acknowledged", 1), else_=0)),
                   sa.func.sum(sa.case((sa.and_(status == "open",
                                                ALERTS.c.opened < due_before), 1), else_=0)),
                   sa.func.count(ESC.c.alert_id))
         .select_from(ALERTS.join(STATES, STATES.c.alert_id == ALERTS.c.alert_id)
                      .outerjoin(ESC, ESC.c.alert_id == ALERTS.c.alert_id)
                      .outerjoin(TEAMS, TEAMS.c.team_id == ALERTS.c.team_id))
         .where(status.in_(("open", "acknowledged")))
         .group_by(ALERTS.c.team_id, TEAMS.c.facility).order_by(ALERTS.c.team_id))
    with store.connect() as conn:
        return [{"team": t, "facility": f, "open": int(o or 0), "acknowledged": int(a or 0),
                 "breached": int(b or 0), "escalated": int(e or 0)}
                for t, f, o, a, b, e in conn.execute(q)]
