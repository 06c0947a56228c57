"""The monitor: judges residents' readings as they are projected, and raises alerts as events.

One monitor among the replicas (a lease). Each pass, in order:

1. Readings the ``monitoring`` projection stored since the cursor (``hub_monitor_cursor``):
   for each resident touched who is signed to a team, the rules (``rules.evaluate``) on
   their newest readings; a finding with no unresolved alert of its kind becomes a
   ``DetectedIssue`` event (a critical one is escalated in the same publish).
2. Every ``sweep_seconds``: enrolled residents without a reading for ``missing_days``, and
   open alerts past the team's SLA (escalated to the team's specialist facility).
3. The events are published (acknowledged at the durable moment), then the cursor moves.

A crash between 3's publish and its cursor judges the same readings again: the alert ids
are derived from the resident, the kind and the readings relied on, so the same alert is
the same resource (the projection keeps the first), never a second alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from datetime import timedelta

import orjson
import sqlalchemy as sa

from hub import clock
from hub.config import Monitoring, Settings
from hub.engine.acks import JournalAcks, publish_durably
from hub.engine.projection import Upsert
from hub.engine.writer import write
from hub.envelope import HUB_SOURCE, Envelope, new_event_id, now_rfc3339
from hub.errors import HubError
from hub.log.producer import Publisher
from hub.monitoring import projection as mp
from hub.monitoring.rules import (
    CRITICAL,
    MISSING,
    Finding,
    Reading,
    Thresholds,
    escalation_due,
    evaluate,
    missing,
)
from hub.signing import Signer
from hub.store import lease
from hub.store.db import Store
from hub.store.schema import monitor_cursor

log = logging.getLogger(__name__)
_T = mp.MonitoringProjection().tables(sa.MetaData())
READINGS, ENROL, ALERTS, STATES, ESC, TEAMS = (
    _T[mp.READINGS], _T[mp.ENROLMENTS], _T[mp.ALERTS], _T[mp.STATES], _T[mp.ESCALATIONS],
    _T[mp.TEAMS])
HISTORY = 50  # newest readings per resident the rules look at (the window is far smaller)
UNRESOLVED = ("open", "acknowledged")


def thresholds(m: Monitoring) -> Thresholds:
    return Thresholds(**{f.name: getattr(m, f.name) for f in dataclasses.fields(Thresholds)})


def alert_id(patient: str, kind: str, basis: tuple[str, ...] | str) -> str:
    text = "\x1f".join((patient, kind, *((basis,) if isinstance(basis, str) else basis)))
    return f"mon-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _sign(signer: Signer, resource: dict, key: str) -> Envelope:
    return signer.sign(Envelope(
        id=new_event_id(), source=HUB_SOURCE, type=f"fhir.{resource['resourceType']}.upsert.v1",
        subject=f"{resource['resourceType']}/{resource['id']}", time=now_rfc3339(), key=key,
        data=orjson.dumps(resource)))


def alert_resource(aid: str, patient: str, team: str, f: Finding) -> dict:
    return {"resourceType": "DetectedIssue", "id": aid, "status": "preliminary",
            "code": {"coding": [{"system": mp.ALERT_SYSTEM, "code": f.kind}]},
            "severity": "high" if f.critical else "moderate",
            "patient": {"reference": f"Patient/{patient}"},
            "identifiedDateTime": now_rfc3339(), "detail": f.reason,
            "implicated": [{"reference": f"Observation/{r}"} for r in f.readings],
            "extension": [{"url": mp.EXT_TEAM,
                           "valueReference": {"reference": f"CareTeam/{team}"}}]}


def action_task(task_id: str, action: str, alert: str, patient: str, *,
                owner: dict | None = None, reason: str | None = None,
                inputs: list[tuple[str, str]] = ()) -> dict:
    """The Task recording what was done about an alert (acknowledge, resolve, escalate,
    refer). ``inputs``: (kind code, reference) pairs, e.g. the referral it became."""
    task: dict = {"resourceType": "Task", "id": task_id, "status": "completed",
                  "intent": "order",
                  "code": {"coding": [{"system": mp.ACTION_SYSTEM, "code": action}]},
                  "focus": {"reference": f"DetectedIssue/{alert}"},
                  "for": {"reference": f"Patient/{patient}"}, "authoredOn": now_rfc3339()}
    if owner:
        task["owner"] = owner
    if reason:
        task["statusReason"] = {"text": reason}
    if inputs:
        task["input"] = [{"type": {"coding": [{"system": mp.ACTION_SYSTEM, "code": kind}]},
                          "valueReference": {"reference": ref}} for kind, ref in inputs]
    return task


class Monitor:
    def __init__(self, settings: Settings, store: Store, publisher: Publisher, signer: Signer,
                 acks: JournalAcks | None = None, sweep_seconds: float = 10.0) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.signer = signer
        self.acks = acks
        self.th = thresholds(settings.monitoring)
        self.sweep_seconds = sweep_seconds
        self.holder = lease.holder_name("monitor")
        self.raised = 0
        self.escalated = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_sweep = 0.0
        # Raised but perhaps not projected yet: (patient, kind) and escalated alert ids.
        self._pending: dict[tuple[str, str], float] = {}
        self._pending_escalations: dict[str, float] = {}
        self._raised: set[str] = set()  # alert ids this process published

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self, *_: object) -> None:
        """``on_commit`` of the monitoring projection's runner: new rows to judge."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                if await asyncio.to_thread(lease.acquire, self.store, "monitoring-monitor",
                                           self.holder, 15.0):
                    await self.once()
            except HubError as exc:  # broker or store away: the next pass tries again
                log.warning("monitor: %s; retrying", exc)
            # At most ten passes a second however often the projection commits: each pass
            # takes every reading stored since the last one.
            await asyncio.sleep(0.1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()

    async def once(self, sweep: bool | None = None) -> int:
        """One pass; returns the number of events published."""
        if sweep is None:
            sweep = time.monotonic() - self._last_sweep >= self.sweep_seconds
        envs, cursor = await asyncio.to_thread(self._judge_new)
        if sweep:
            envs += await asyncio.to_thread(self._sweep)
            self._last_sweep = time.monotonic()
        if envs:
            await publish_durably(self.publisher, self.settings.topics.events, envs,
                                  self.acks, self.settings.ack_timeout_s)
        if cursor is not None:
            await asyncio.to_thread(self._save_cursor, cursor)
        return len(envs)

    # --- reading the projection -------------------------------------------------------

    def _cursor(self, conn: sa.Connection) -> int:
        return conn.execute(sa.select(monitor_cursor.c.seq).where(
            monitor_cursor.c.name == "readings")).scalar() or 0

    def _save_cursor(self, seq: int) -> None:
        with self.store.begin() as conn:
            write(conn, {monitor_cursor.name: monitor_cursor}, [Upsert(
                monitor_cursor.name, {"name": "readings", "seq": seq}, ("name",))])

    def _unresolved(self, conn: sa.Connection, patients: list[str]) -> set[tuple[str, str]]:
        rows = conn.execute(sa.select(ALERTS.c.patient_key, ALERTS.c.kind).select_from(
            ALERTS.join(STATES, STATES.c.alert_id == ALERTS.c.alert_id)).where(
            ALERTS.c.patient_key.in_(patients), STATES.c.status.in_(UNRESOLVED))).all()
        now = time.monotonic()
        # What this monitor raised stays "unresolved" until the projection shows it.
        for k, at in list(self._pending.items()):
            if now - at > 60:
                del self._pending[k]
        return {(r.patient_key, r.kind) for r in rows} | set(self._pending)

    def _enrolled(self, conn: sa.Connection, patients: list[str] | None = None) -> list:
        q = sa.select(ENROL.c.patient_key, ENROL.c.team_id, ENROL.c.diabetic,
                      ENROL.c.signed).where(ENROL.c.status == "active")
        if patients is not None:
            q = q.where(ENROL.c.patient_key.in_(patients))
        return conn.execute(q).all()

    def _judge_new(self) -> tuple[list[Envelope], int | None]:
        with self.store.connect() as conn:
            since = self._cursor(conn)
            rows = conn.execute(sa.select(READINGS.c.seq, READINGS.c.patient_key).where(
                READINGS.c.seq > since).order_by(READINGS.c.seq).limit(5000)).all()
            if not rows:
                return [], None
            touched = sorted({r.patient_key for r in rows})
            out: list[Envelope] = []
            for n in range(0, len(touched), 500):
                chunk = touched[n:n + 500]
                enrolled = self._enrolled(conn, chunk)
                open_kinds = self._unresolved(conn, chunk)
                for e in enrolled:
                    recent = conn.execute(sa.select(READINGS).where(
                        READINGS.c.patient_key == e.patient_key).order_by(
                        READINGS.c.measured.desc()).limit(HISTORY)).mappings().all()
                    found = evaluate([_reading(r) for r in recent], e.diabetic, self.th)
                    out += self._raise(conn, e.patient_key, e.team_id, found, open_kinds)
        return out, rows[-1].seq

    def _raise(self, conn: sa.Connection, patient: str, team: str, found: list[Finding],
               open_kinds: set[tuple[str, str]]) -> list[Envelope]:
        out: list[Envelope] = []
        for f in found:
            if (patient, f.kind) not in open_kinds:
                out += self._alert(conn, patient, team, f, f.readings or f.reason)
                open_kinds.add((patient, f.kind))
        return out

    def _alert(self, conn: sa.Connection, patient: str, team: str, f: Finding,
               basis: tuple[str, ...] | str) -> list[Envelope]:
        """The events raising ``f`` (and escalating it, if critical), unless the same alert
        (same resident, kind and basis) exists already, in whatever state: a resolved
        alert is not raised again by the same readings."""
        aid = alert_id(patient, f.kind, basis)
        if aid in self._raised or conn.execute(sa.select(ALERTS.c.alert_id).where(
                ALERTS.c.alert_id == aid)).first() is not None:
            return []
        out = [_sign(self.signer, alert_resource(aid, patient, team, f), patient)]
        self._raised.add(aid)
        self._pending[(patient, f.kind)] = time.monotonic()
        self.raised += 1
        if f.kind == CRITICAL:
            out += self._escalate(conn, aid, patient, team, f"critical reading: {f.reason}")
        return out

    def _escalate(self, conn: sa.Connection, aid: str, patient: str, team: str | None,
                  reason: str) -> list[Envelope]:
        specialist = conn.execute(sa.select(TEAMS.c.specialist).where(
            TEAMS.c.team_id == team)).scalar() if team else None
        if not specialist:
            log.warning("monitor: alert %s has no team specialist to escalate to", aid)
            return []
        self._pending_escalations[aid] = time.monotonic()
        self.escalated += 1
        task = action_task(f"{aid}-escalate", "escalate", aid, patient, reason=reason,
                           owner={"reference": f"Organization/{specialist}"})
        return [_sign(self.signer, task, patient)]

    def _sweep(self) -> list[Envelope]:
        now = clock.now()
        out: list[Envelope] = []
        with self.store.connect() as conn:
            enrolled = self._enrolled(conn)
            last = dict(conn.execute(sa.select(READINGS.c.patient_key,
                                               sa.func.max(READINGS.c.measured))
                                     .group_by(READINGS.c.patient_key)).all())
            for n in range(0, len(enrolled), 500):
                chunk = enrolled[n:n + 500]
                open_kinds = self._unresolved(conn, [e.patient_key for e in chunk])
                for e in chunk:
                    f = missing(last.get(e.patient_key), e.signed or now.isoformat(), now,
                                self.th)
                    if f is not None and (e.patient_key, MISSING) not in open_kinds:
                        basis = last.get(e.patient_key) or f"signed {e.signed}"
                        out += self._alert(conn, e.patient_key, e.team_id, f, basis)
            sla = self.settings.monitoring.sla_hours
            overdue = conn.execute(sa.select(ALERTS.c.alert_id, ALERTS.c.patient_key,
                                             ALERTS.c.team_id, ALERTS.c.opened).select_from(
                ALERTS.join(STATES, STATES.c.alert_id == ALERTS.c.alert_id).outerjoin(
                    ESC, ESC.c.alert_id == ALERTS.c.alert_id)).where(
                STATES.c.status == "open", ESC.c.alert_id.is_(None),
                ALERTS.c.opened <= (now - timedelta(hours=sla)).isoformat())).all()
            for a in overdue:
                if a.alert_id in self._pending_escalations or not escalation_due(
                        a.opened, now, sla):
                    continue
                out += self._escalate(conn, a.alert_id, a.patient_key, a.team_id,
                                      f"not acknowledged within {sla:g} h")
        return out


def _reading(row: sa.RowMapping) -> Reading:
    return Reading(row["reading_id"], row["kind"], row["measured"], sbp=row["sbp"],
                   dbp=row["dbp"], glucose=row["glucose"], fasting=row["fasting"])
