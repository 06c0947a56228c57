"""Remote monitoring folded from the log: devices, enrolments, readings, alerts.

* ``Device``, ``CareTeam``, ``EpisodeOfCare`` from the hub (the registry's teams, signed
  residents and device bindings, ``hub.registry.care``);
* home-monitoring ``Observation`` s (category ``urn:hie:category|home-monitoring``) from
  any facility: the readings;
* ``DetectedIssue`` from the hub: an alert the monitor raised (``hub.monitoring.service``),
  with the readings it relied on as ``implicated``;
* ``Task`` with code ``urn:hie:monitoring:action|acknowledge|resolve|escalate|refer`` and
  ``focus`` the alert: what the team (or the monitor) did about it.

An alert's state only moves forward (open -> acknowledged -> resolved: the guard is the
status rank, then the time), the first escalation is kept, so any order of the same events
and a rebuild give the same worklist. Every alert, state change and escalation also goes to
the ``hie.alerts.v1`` outbox.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE
from hub.monitoring import readings as rd
from hub.monitoring.rules import STATUS_RANK
from hub.record.rules import utc_instant, version_order
from hub.registry import care
from hub.store.schema import outbox_table

FEED_TYPE = "hie.alerts.v1"
ALERT_SYSTEM = "urn:hie:monitoring:alert"
ACTION_SYSTEM = "urn:hie:monitoring:action"
EXT_TEAM = "urn:hie:ext:care-team"
ACTIONS = ("acknowledge", "resolve", "escalate", "refer")
DEVICES, TEAMS, ENROLMENTS, READINGS, ALERTS, STATES, ESCALATIONS, REFERRALS, FEED = (
    "mon_device", "mon_team", "mon_enrolment", "mon_reading", "mon_alert",
    "mon_alert_state", "mon_escalation", "mon_referral", "mon_feed")
ACTION_STATUS = {"acknowledge": "acknowledged", "resolve": "resolved"}


def _ref_id(ref: dict | None, rtype: str) -> str | None:
    text = (ref or {}).get("reference") or ""
    return text.split("/", 1)[1] if text.startswith(f"{rtype}/") else None


def _code(concept: dict | None, system: str) -> str | None:
    return next((c.get("code") for c in (concept or {}).get("coding") or ()
                 if c.get("system") == system), None)


class MonitoringProjection:
    name = "monitoring"
    version = 1

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        s = suffix
        text = sa.String(200)
        okey = sa.String(320)
        devices = sa.Table(
            DEVICES + s, metadata,
            sa.Column("device_id", text, primary_key=True),
            sa.Column("kind", sa.String(20)),
            sa.Column("facility", sa.String(64)),
            sa.Column("patient_key", text),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("order_key", okey, nullable=False))
        teams = sa.Table(
            TEAMS + s, metadata,
            sa.Column("team_id", text, primary_key=True),
            sa.Column("name", text),
            sa.Column("facility", sa.String(64)),
            sa.Column("specialist", sa.String(64)),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("order_key", okey, nullable=False))
        enrolments = sa.Table(
            ENROLMENTS + s, metadata,
            sa.Column("episode_id", sa.String(300), primary_key=True),
            sa.Column("patient_key", text, nullable=False, index=True),
            sa.Column("team_id", text, nullable=False),
            sa.Column("diabetic", sa.Boolean, nullable=False),
            sa.Column("signed", sa.String(40)),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("order_key", okey, nullable=False))
        readings = sa.Table(
            READINGS + s, metadata,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                      primary_key=True, autoincrement=True),
            sa.Column("reading_id", text, nullable=False, unique=True),
            sa.Column("patient_key", text, nullable=False),
            sa.Column("device_id", text),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("measured", sa.String(40), nullable=False),
            sa.Column("sbp", sa.Float),
            sa.Column("dbp", sa.Float),
            sa.Column("glucose", sa.Float),
            sa.Column("fasting", sa.Boolean, nullable=False),
            sa.Column("published", sa.String(40), nullable=False),  # the event's time
            sa.Column("order_key", okey, nullable=False))
        sa.Index(f"ix_{readings.name}_patient", readings.c.patient_key, readings.c.measured)
        alerts = sa.Table(
            ALERTS + s, metadata,
            sa.Column("alert_id", text, primary_key=True),
            sa.Column("patient_key", text, nullable=False, index=True),
            sa.Column("team_id", text),
            sa.Column("kind", sa.String(40), nullable=False),
            sa.Column("severity", sa.String(20), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("readings", sa.Text, nullable=False),  # JSON list of Observation ids
            sa.Column("opened", sa.String(40), nullable=False))
        states = sa.Table(
            STATES + s, metadata,
            sa.Column("alert_id", text, primary_key=True),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("by_facility", sa.String(64)),
            sa.Column("by_who", text),
            sa.Column("at", sa.String(40), nullable=False),
            sa.Column("rank", okey, nullable=False))
        escalations = sa.Table(
            ESCALATIONS + s, metadata,
            sa.Column("alert_id", text, primary_key=True),
            sa.Column("to_facility", sa.String(64)),
            sa.Column("reason", sa.Text),
            sa.Column("at", sa.String(40), nullable=False))
        referrals = sa.Table(
            REFERRALS + s, metadata,
            sa.Column("alert_id", text, primary_key=True),
            sa.Column("service_request", text, nullable=False),
            sa.Column("task", text),
            sa.Column("at", sa.String(40), nullable=False))
        feed = outbox_table(FEED + s, metadata)
        return {DEVICES: devices, TEAMS: teams, ENROLMENTS: enrolments, READINGS: readings,
                ALERTS: alerts, STATES: states, ESCALATIONS: escalations,
                REFERRALS: referrals, FEED: feed}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            rtype = e.resource_type
            if e.is_delete or rtype not in _HANDLERS:
                continue
            res = orjson.loads(e.data)
            meta = res.get("meta") or {}
            okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time) + \
                f"|{e.id}"
            out += _HANDLERS[rtype](e, res, okey)
        return out


def _device(e: Event, res: dict, okey: str) -> list[Change]:
    if e.source != HUB_SOURCE:
        return []  # a facility's own Device resources are not the registry's binding
    return [Upsert(DEVICES, {
        "device_id": res["id"], "kind": _code(res.get("type"), care.KIND_SYSTEM),
        "facility": _ref_id(res.get("owner"), "Organization"),
        "patient_key": _ref_id(res.get("patient"), "Patient"),
        "status": res.get("status") or "active", "order_key": okey},
        ("device_id",), guard="order_key")]


def _team(e: Event, res: dict, okey: str) -> list[Change]:
    if e.source != HUB_SOURCE:
        return []
    specialist = next((_ref_id(p.get("member"), "Organization")
                       for p in res.get("participant") or ()), None)
    return [Upsert(TEAMS, {
        "team_id": res["id"], "name": res.get("name"),
        "facility": next((_ref_id(o, "Organization")
                          for o in res.get("managingOrganization") or ()), None),
        "specialist": specialist, "status": res.get("status") or "active",
        "order_key": okey}, ("team_id",), guard="order_key")]


def _episode(e: Event, res: dict, okey: str) -> list[Change]:
    if e.source != HUB_SOURCE:
        return []
    conditions = {_code(t, care.CONDITION_SYSTEM) for t in res.get("type") or ()}
    return [Upsert(ENROLMENTS, {
        "episode_id": res["id"], "patient_key": _ref_id(res.get("patient"), "Patient") or "",
        "team_id": next((_ref_id(t, "CareTeam") for t in res.get("team") or ()), "") or "",
        "diabetic": "diabetes" in conditions,
        "signed": (res.get("period") or {}).get("start"),
        "status": res.get("status") or "active", "order_key": okey},
        ("episode_id",), guard="order_key")]


def _observation(e: Event, res: dict, okey: str) -> list[Change]:
    if e.source == HUB_SOURCE or not rd.is_home_reading(res):
        return []
    rid = f"{e.facility_id}.{res['id']}"
    r = rd.reading_of(res, rid)
    if r is None or res.get("status") in ("entered-in-error", "cancelled"):
        return []
    device = _ref_id(res.get("device"), "Device")
    return [Upsert(READINGS, {
        "reading_id": rid, "patient_key": e.key, "device_id": device, "kind": r.kind,
        "measured": r.time, "sbp": r.sbp, "dbp": r.dbp, "glucose": r.glucose,
        "fasting": r.fasting, "published": e.time, "order_key": okey},
        ("reading_id",), guard="order_key")]


def _feed(alert_id: str, patient_key: str, change: str, at: str, **more: object) -> Upsert:
    payload = {"type": f"{FEED_TYPE}.{change}", "id": f"alert-{alert_id}-{change}",
               "alert": f"DetectedIssue/{alert_id}", "patient": f"Patient/{patient_key}",
               "change": change, "at": at, **more}
    # The id names the alert and the change: re-delivered events add no second message.
    return Upsert(FEED, {"feed_id": payload["id"][:220], "patient_key": patient_key,
                         "payload": orjson.dumps(payload), "sent": False},
                  ("feed_id",), replace=False)


def _alert(e: Event, res: dict, okey: str) -> list[Change]:
    kind = _code(res.get("code"), ALERT_SYSTEM)
    if e.source != HUB_SOURCE or kind is None:
        return []  # only the hub's monitor raises monitoring alerts
    patient = _ref_id(res.get("patient"), "Patient") or ""
    team = next((_ref_id(x.get("valueReference"), "CareTeam")
                 for x in res.get("extension") or () if x.get("url") == EXT_TEAM), None)
    relied = [r.get("reference") for r in res.get("implicated") or ()]
    opened = utc_instant(res["identifiedDateTime"]) if res.get("identifiedDateTime") \
        else e.time
    aid = res["id"]
    return [
        Upsert(ALERTS, {"alert_id": aid, "patient_key": patient, "team_id": team,
                        "kind": kind, "severity": res.get("severity") or "moderate",
                        "reason": res.get("detail") or "", "readings": orjson.dumps(
                            relied).decode(), "opened": opened}, ("alert_id",),
               replace=False),
        Upsert(STATES, {"alert_id": aid, "status": "open", "by_facility": None,
                        "by_who": None, "at": opened, "rank": f"0|{opened}|{e.id}"},
               ("alert_id",), guard="rank"),
        _feed(aid, patient, "opened", opened, kind=kind, team=team,
              severity=res.get("severity"), reason=res.get("detail"), readings=relied)]


def _action(e: Event, res: dict, okey: str) -> list[Change]:
    action = _code(res.get("code"), ACTION_SYSTEM)
    aid = _ref_id(res.get("focus"), "DetectedIssue")
    if action not in ACTIONS or aid is None:
        return []
    patient = _ref_id(res.get("for"), "Patient") or ""
    at = utc_instant(res["authoredOn"]) if res.get("authoredOn") else e.time
    who = (res.get("owner") or {}).get("display")
    by = e.facility_id
    if action in ACTION_STATUS:
        status = ACTION_STATUS[action]
        return [Upsert(STATES, {"alert_id": aid, "status": status, "by_facility": by,
                                "by_who": who, "at": at,
                                "rank": f"{STATUS_RANK[status]}|{at}|{e.id}"},
                       ("alert_id",), guard="rank"),
                _feed(aid, patient, status, at, by=by, who=who)]
    to = _ref_id(res.get("owner"), "Organization")
    reason = (res.get("statusReason") or {}).get("text")
    out: list[Change] = [
        Upsert(ESCALATIONS, {"alert_id": aid, "to_facility": to, "reason": reason, "at": at},
               ("alert_id",), replace=False),
        _feed(aid, patient, "escalated", at, to=to, reason=reason)]
    if action == "refer":
        request = next((_ref_id(i.get("valueReference"), "ServiceRequest")
                        for i in res.get("input") or ()), None)
        task = next((_ref_id(i.get("valueReference"), "Task")
                     for i in res.get("input") or ()), None)
        if request:
            out.append(Upsert(REFERRALS, {"alert_id": aid, "service_request": request,
                                          "task": task, "at": at}, ("alert_id",),
                              replace=False))
            out.append(_feed(aid, patient, "referred", at, to=to,
                             referral=f"ServiceRequest/{request}"))
    return out


_HANDLERS = {"Device": _device, "CareTeam": _team, "EpisodeOfCare": _episode,
             "Observation": _observation, "DetectedIssue": _alert, "Task": _action}
