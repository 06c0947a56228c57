"""Questions to the referral projection: each referral's state is the fold of its steps.

Routing (who may accept) comes from the registry the caller passes, as the imaging worklist
does: a pending referral follows a registry change.
"""

from __future__ import annotations

import weakref
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub import clock
from hub.config import Settings
from hub.referral import rules
from hub.referral.projection import REQUESTS, STEPS, ReferralProjection, step_from_row
from hub.registry.model import FacilityRecord
from hub.store.db import Store

T = ReferralProjection().tables(sa.MetaData())
Registry = Mapping[str, FacilityRecord]


@dataclass(frozen=True, slots=True)
class Folded:
    request: rules.Request
    referral: rules.Referral
    receivers: tuple[str, ...]
    due: str | None
    breached: bool

    def summary(self) -> dict:
        q, r = self.request, self.referral
        return {"id": q.id, "patient": f"Patient/{q.patient_key}", "sender": q.sender,
                "direction": q.direction, "service": q.service, "priority": q.priority,
                "tier": q.tier, "receivers": list(self.receivers), "team": q.team,
                "closes": q.closes,
                "reason": q.reason, "state": r.state, "holder": r.holder,
                "clinician": r.clinician, "received": r.received, "accepted": r.accepted_at,
                "arrived": r.arrived_at, "closed": r.closed_at,
                "rejected_reason": r.rejected_reason, "due": self.due,
                "breached": self.breached}

    def detail(self) -> dict:
        return {**self.summary(), "evidence": list(self.request.evidence),
                "history": list(self.referral.history)}


def referral_policy(settings: Settings) -> rules.Policy:
    return rules.Policy(dict(settings.referral_sla_minutes), settings.referral_expiry_hours)


def request_of_row(row) -> rules.Request:
    return rules.Request(row.referral_id, row.patient_key, row.sender, row.direction,
                         row.service, row.priority, row.performer, row.tier, row.closes,
                         row.reason, tuple(orjson.loads(row.evidence)), row.team)


def requests_and_steps(store: Store, where: Iterable[sa.ColumnElement[bool]] = (),
                       upto: int | None = None, skip: Container[str] = ()
                       ) -> tuple[dict[str, rules.Request], dict[str, list[rules.Step]]]:
    """The requests matching ``where`` (less those in ``skip``) and their steps in log order
    (up to ``upto``)."""
    q, s = T[REQUESTS], T[STEPS]
    steps: dict[str, list[rules.Step]] = {}
    with store.connect() as conn:
        requests = {r.referral_id: request_of_row(r) for r in conn.execute(
            sa.select(q).where(*where)) if r.referral_id not in skip}
        ids = sorted(requests)
        for i in range(0, len(ids), 500):  # bounded IN lists: SQLite limits parameters
            stmt = (sa.select(s.c.seq, s.c.referral_id, s.c.payload)
                    .where(s.c.referral_id.in_(ids[i:i + 500])))
            if upto is not None:
                stmt = stmt.where(s.c.seq <= upto)
            for seq, rid, payload in conn.execute(stmt):
                steps.setdefault(rid, []).append(step_from_row(seq, payload))
    return requests, steps


def load(store: Store, registry: Registry, policy: rules.Policy,
         where: Iterable[sa.ColumnElement[bool]] = (), now: datetime | None = None,
         upto: int | None = None, skip: Container[str] = ()) -> list[Folded]:
    """The referrals matching ``where`` (on the request table), folded as of ``now``; with
    ``upto``, only the steps up to that ``seq`` count (what the log held at that point)."""
    now = now or clock.now()
    requests, steps = requests_and_steps(store, where, upto, skip)
    out = []
    for rid, req in requests.items():
        may = rules.receivers(req, registry)
        ref = rules.fold(req, steps.get(rid, ()), may, policy, now)
        if ref is None:
            continue
        due, breached = rules.due_and_breach(req, ref, policy, now)
        out.append(Folded(req, ref, may, due, breached))
    out.sort(key=lambda f: (rules.RANK.get(f.request.priority, 9), f.referral.received,
                            f.request.id))
    return out


def one(store: Store, registry: Registry, policy: rules.Policy, referral_id: str,
        upto: int | None = None) -> Folded | None:
    found = load(store, registry, policy, [T[REQUESTS].c.referral_id == referral_id],
                 upto=upto)
    return found[0] if found else None


# Referrals whose fold reached a final state, per store: the rules refuse every later step,
# so they never reopen, and a worklist of open referrals need not fold them again.
_settled: weakref.WeakKeyDictionary[Store, set[str]] = weakref.WeakKeyDictionary()


def incoming(store: Store, registry: Registry, policy: rules.Policy, facility: str,
             states: frozenset[str] = rules.OPEN) -> list[Folded]:
    """Referrals ``facility`` may accept or holds, in ``states``: priority, then arrival."""
    settled = _settled.setdefault(store, set())
    folded = load(store, registry, policy, skip=settled if states <= rules.OPEN else ())
    settled.update(f.request.id for f in folded if f.referral.state in rules.FINAL)
    return [f for f in folded if f.referral.state in states and (
        f.referral.holder == facility if f.referral.holder else facility in f.receivers)]


def outgoing(store: Store, registry: Registry, policy: rules.Policy, facility: str,
             states: frozenset[str] | None = None) -> list[Folded]:
    return [f for f in load(store, registry, policy, [T[REQUESTS].c.sender == facility])
            if states is None or f.referral.state in states]


def statistics(store: Store, registry: Registry, policy: rules.Policy,
               month: str | None = None) -> list[dict]:
    """Loop closure per sending tier and consortium month of the up-referrals: how many were
    closed by a live down-referral, median minutes to acceptance, rejections by reason."""
    folded = load(store, registry, policy)
    closing = {f.request.closes for f in folded if f.request.direction == "down"
               and f.referral.state in rules.CLOSING}
    groups: dict[tuple[str, str], dict] = {}
    for f in folded:
        q, r = f.request, f.referral
        if q.direction != "up":
            continue
        sender = registry.get(q.sender)
        key = (sender.tier if sender else "unknown", rules.month_of(r.received))
        if month and key[1] != month:
            continue
        g = groups.setdefault(key, {"tier": key[0], "month": key[1], "up_referrals": 0,
                                    "closed_by_down_referral": 0, "accepted": 0,
                                    "sla_breaches": 0, "_minutes": [], "rejections": {}})
        g["up_referrals"] += 1
        g["closed_by_down_referral"] += q.id in closing
        g["sla_breaches"] += f.breached
        if r.accepted_at:
            g["accepted"] += 1
            g["_minutes"].append((rules.instant(r.accepted_at) - rules.instant(r.received)
                                  ).total_seconds() / 60)
        if r.state == rules.REJECTED:
            reason = r.rejected_reason or "unspecified"
            g["rejections"][reason] = g["rejections"].get(reason, 0) + 1
    out = []
    for _, g in sorted(groups.items()):
        minutes = g.pop("_minutes")
        median = rules.median(minutes)
        g["closure_rate"] = round(g["closed_by_down_referral"] / g["up_referrals"], 3)
        g["median_minutes_to_acceptance"] = None if median is None else round(median, 1)
        out.append(g)
    return out


def steps_after(store: Store, limit: int) -> list:
    """Unsent rows of the step outbox, oldest first (for the feed relay)."""
    s = T[STEPS]
    with store.connect() as conn:
        return conn.execute(sa.select(s.c.seq, s.c.feed_id, s.c.patient_key, s.c.referral_id,
                                      s.c.payload)
                            .where(s.c.sent.is_(False)).order_by(s.c.seq).limit(limit)).all()
