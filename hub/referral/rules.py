"""Two-way referral with a green channel: the rules, free of I/O.

A referral is a FHIR ``ServiceRequest`` (category referral) from the sending facility; its
state moves by ``Task`` events (``focus`` = the request) from the sending and the receiving
side. The state is a fold of those steps in log order:

    requested --accept (receiver)--> accepted --arrive (holder)--> in-progress
              --reject (receiver, reason)--> rejected            --complete (holder)--> completed
              --cancel (sender)--> cancelled       accepted --cancel (sender or holder)--> cancelled
              --(no answer past the expiry)--> expired

A step that the state machine does not allow (wrong state, wrong party, a rejection without a
reason, anything after a final state) is kept in the history as refused and changes nothing,
so of two clinicians accepting at once the first in the log wins and the second is refused.
Who receives a referral: the facility the request names (``performer``; a down-referral may
also name the family-doctor team, a ``CareTeam``, that takes the patient on); else, for a
down-referral, the facility that sent the up-referral it closes, or, if that facility does not
receive the service (a village clinic and rehabilitation), its group's facilities that do at
the nearest tier above it; else the facilities the registry lists as receiving referrals for
the requested service, at the requested tier (by default the nearest tier above the sender),
its own group first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from hub.clock import CONSORTIUM_TZ
from hub.fhir import reference_id
from hub.imaging.rules import hub_ref
from hub.registry.model import TIER_RANK, TIER_SYSTEM, FacilityRecord

REFERRAL_CATEGORY = ("http://snomed.info/sct", "3457005")  # "Patient referral"
DIRECTION_SYSTEM = "urn:hie:referral-direction"
SERVICE_SYSTEM = "urn:hie:referral-service"
REJECTION_SYSTEM = "urn:hie:referral-rejection"
TASK_CODE = ("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")
PRIORITIES = ("stat", "asap", "urgent", "routine")
RANK = {p: i for i, p in enumerate(PRIORITIES)}
REJECTION_REASONS = {
    "no-capacity": "no bed or no slot",
    "not-indicated": "the referral is not indicated",
    "wrong-service": "this service does not treat it",
    "incomplete": "the evidence is incomplete",
    "patient-declined": "the patient declined",
    "other": "other (text says why)",
}

REQUESTED, ACCEPTED, REJECTED, IN_PROGRESS, COMPLETED, CANCELLED, EXPIRED = (
    "requested", "accepted", "rejected", "in-progress", "completed", "cancelled", "expired")
FINAL = frozenset({REJECTED, COMPLETED, CANCELLED, EXPIRED})
OPEN = frozenset({REQUESTED, ACCEPTED, IN_PROGRESS})
TASK_STATES = frozenset({ACCEPTED, REJECTED, IN_PROGRESS, COMPLETED, CANCELLED})
# What closes a loop: a down-referral that is still alive (not refused or withdrawn).
CLOSING = frozenset({REQUESTED, ACCEPTED, IN_PROGRESS, COMPLETED})


@dataclass(frozen=True, slots=True)
class Policy:
    """Acceptance SLA per priority (the green channel; routine has none) and how long a
    referral nobody accepted stays open before it expires. Each consortium sets its own."""

    sla_minutes: Mapping[str, float] = field(default_factory=lambda: {
        "stat": 30, "asap": 60, "urgent": 120})
    expiry_hours: float = 7 * 24

    def due(self, received: str, priority: str) -> datetime | None:
        minutes = self.sla_minutes.get(priority)
        return None if minutes is None else instant(received) + timedelta(minutes=minutes)

    def expires(self, received: str) -> datetime:
        return instant(received) + timedelta(hours=self.expiry_hours)


@dataclass(frozen=True, slots=True)
class Request:
    """The referral as its sender wrote it (the newest version of the ServiceRequest)."""

    id: str  # hub id of the ServiceRequest: <sender>.<id>
    patient_key: str
    sender: str
    direction: str  # "up" or "down"
    service: str
    priority: str
    performer: str | None = None
    tier: str | None = None
    closes: str | None = None  # the up-referral a down-referral closes (hub id)
    reason: str | None = None
    evidence: tuple[str, ...] = ()
    team: str | None = None  # the family-doctor team it goes to (``performer`` CareTeam)


@dataclass(frozen=True, slots=True)
class Step:
    """One proposed transition, in log order (``seq``). ``at`` is the hub's time of the event;
    ``key`` the log key it travelled under (one referral's steps must share its patient's)."""

    seq: int
    event: str
    actor: str
    to: str
    at: str
    key: str
    reason: str | None = None
    clinician: str | None = None
    task: str | None = None


@dataclass(frozen=True, slots=True)
class Referral:
    state: str
    received: str
    holder: str | None = None
    clinician: str | None = None
    accepted_at: str | None = None
    rejected_reason: str | None = None
    arrived_at: str | None = None
    closed_at: str | None = None
    history: tuple[dict[str, Any], ...] = ()


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def is_referral(sr: dict[str, Any]) -> bool:
    return any((c.get("system"), c.get("code")) == REFERRAL_CATEGORY
               or c.get("system") == DIRECTION_SYSTEM
               for cat in sr.get("category") or () for c in cat.get("coding") or ())


def _code(concept: dict[str, Any] | None, system: str) -> str | None:
    for c in (concept or {}).get("coding") or ():
        if c.get("system") == system and c.get("code"):
            return str(c["code"])
    return None


def _text(concept: dict[str, Any] | None) -> str | None:
    concept = concept or {}
    if concept.get("text"):
        return str(concept["text"])
    return next((str(c.get("display") or c.get("code")) for c in concept.get("coding") or ()
                 if c.get("display") or c.get("code")), None)


def request_of(sr: dict[str, Any], sender: str, patient_key: str) -> Request:
    """The referral a ServiceRequest describes (``is_referral`` must hold)."""
    closes = next((hub_ref(r.get("reference"), sender, "ServiceRequest")
                   for r in sr.get("basedOn") or ()), None)
    direction = next((_code(cat, DIRECTION_SYSTEM) for cat in sr.get("category") or ()
                      if _code(cat, DIRECTION_SYSTEM)), None) or ("down" if closes else "up")
    performer = next((found for p in sr.get("performer") or ()
                      if (found := reference_id(p, "Organization"))), None)
    # A down-referral may name the family-doctor team that takes the patient on; the
    # facility receiving it is still the Organization named beside it (the team's), else
    # the one the routing below picks (for a down-referral: where the patient came from).
    team = next((found for p in sr.get("performer") or ()
                 if (found := reference_id(p, "CareTeam"))), None)
    priority = sr.get("priority") or "routine"
    reason = next((_text(c) for c in sr.get("reasonCode") or () if _text(c)), None)
    evidence = tuple(ref for r in sr.get("supportingInfo") or ()
                     if (ref := _evidence_ref(r.get("reference"), sender)))
    return Request(
        id=f"{sender}.{sr['id']}", patient_key=patient_key, sender=sender,
        direction=direction if direction in ("up", "down") else "up",
        service=_code(sr.get("code"), SERVICE_SYSTEM) or _text(sr.get("code")) or "general",
        priority=priority if priority in RANK else "routine",
        performer=performer,
        tier=_code(sr.get("performerType"), TIER_SYSTEM), closes=closes, reason=reason,
        evidence=evidence, team=team)


def _evidence_ref(reference: str | None, sender: str) -> str | None:
    """``Observation/obs-1`` from the sender -> ``Observation/<sender>.obs-1``."""
    if not reference or "/" not in reference:
        return None
    rtype, rid = reference.split("/", 1)
    return f"{rtype}/{hub_ref(reference, sender, rtype)}" if rid else None


def step_of(task: dict[str, Any], sender: str, seq: int, event: str, at: str, key: str
            ) -> tuple[str, Step] | None:
    """(referral id, step) for a Task that moves a referral; None for any other Task."""
    status = task.get("status")
    if status not in TASK_STATES:
        return None
    refs = [task.get("focus") or {}, *(task.get("basedOn") or ())]
    referral = next((hub_ref(r.get("reference"), sender, "ServiceRequest") for r in refs
                     if hub_ref(r.get("reference"), sender, "ServiceRequest")), None)
    if referral is None:
        return None
    reason = _code(task.get("statusReason"), REJECTION_SYSTEM) or _text(task.get("statusReason"))
    clinician = (task.get("owner") or {}).get("display") or \
        (task.get("requester") or {}).get("display")
    return referral, Step(seq, event, sender, status, at, key, reason, clinician,
                          f"{sender}.{task['id']}")


def receivers(req: Request, registry: Mapping[str, FacilityRecord]) -> tuple[str, ...]:
    """Who may accept ``req``, per the request and the registry (see the module doc)."""
    if req.performer:
        return (req.performer,)
    pool = [r for r in registry.values() if r.active and r.id != req.sender
            and req.service in r.referrals]
    if req.direction == "down":
        origin = registry.get(req.closes.partition(".")[0]) if req.closes else None
        if req.closes and (origin is None or req.service in origin.referrals):
            return (req.closes.partition(".")[0],)  # home, where the patient came from
        # Home cannot take it (a village clinic does no rehabilitation): its group's
        # facilities that do, at the tier nearest above it; or, with no up-referral, nearest
        # below the sender.
        home = origin or registry.get(req.sender)
        if home is None:
            return ()
        above = origin is not None
        pool = [r for r in pool if (TIER_RANK.get(r.tier, -1) > TIER_RANK.get(home.tier, -1))
                == above and r.id != home.id]
        found = _nearest(pool, home, req.tier, highest=not above)
        return found or ((origin.id,) if origin else ())
    sender = registry.get(req.sender)
    if sender is not None and not req.tier:
        pool = [r for r in pool if TIER_RANK.get(r.tier, -1) > TIER_RANK.get(sender.tier, -1)]
    return _nearest(pool, sender, req.tier)


def _nearest(pool: list[FacilityRecord], near: FacilityRecord | None, tier: str | None,
             highest: bool = False) -> tuple[str, ...]:
    """Of ``pool``: those at ``tier`` if given; in ``near``'s group if any are; then those
    at the lowest tier (the highest with ``highest``)."""
    if tier:
        pool = [r for r in pool if r.tier == tier]
    if near is not None and near.group:
        pool = [r for r in pool if r.group == near.group] or pool
    if not pool:
        return ()
    ranks = [TIER_RANK.get(r.tier, -1) for r in pool]
    best = max(ranks) if highest else min(ranks)
    return tuple(sorted(r.id for r, rank in zip(pool, ranks, strict=True) if rank == best))


def refusal(ref: Referral, req: Request, step: Step, may_receive: Iterable[str]) -> str | None:
    """Why ``step`` may not move ``ref``; None when it may. Pure: the state machine."""
    if step.key != req.patient_key:
        return (f"the step travelled under key {step.key}, not the referral's patient "
                f"{req.patient_key}: name the patient in Task.for")
    if step.to == REQUESTED:  # a new version of the request itself
        if step.actor != req.sender:
            return f"only the sender {req.sender} may change its request"
        return None if ref.state == REQUESTED else f"the referral is already {ref.state}"
    if ref.state in FINAL:
        return f"the referral is already {ref.state}"
    sender, holder = step.actor == req.sender, step.actor == ref.holder
    if step.to in (ACCEPTED, REJECTED):
        if ref.state != REQUESTED:
            return f"the referral is already {ref.state}" + (
                f" by {ref.holder}" + (f" ({ref.clinician})" if ref.clinician else "")
                if ref.holder else "")
        if step.actor not in set(may_receive):
            return f"{step.actor} is not a receiver of this referral"
        if step.to == REJECTED and not step.reason:
            return "a rejection needs a reason (Task.statusReason)"
        return None
    if step.to == IN_PROGRESS:
        if ref.state != ACCEPTED:
            return f"the patient can arrive only at an accepted referral (it is {ref.state})"
        return None if holder else f"only {ref.holder}, which accepted it, records the arrival"
    if step.to == COMPLETED:
        if ref.state != IN_PROGRESS:
            return f"only a referral in progress can be completed (it is {ref.state})"
        return None if holder else f"only {ref.holder}, which accepted it, completes it"
    if step.to == CANCELLED:
        if ref.state == REQUESTED:
            return None if sender else f"only the sender {req.sender} may withdraw a request"
        if ref.state == ACCEPTED:
            return None if sender or holder else \
                f"only {req.sender} or {ref.holder} may cancel an accepted referral"
        return "a referral in progress is completed, not cancelled"
    return f"unknown step {step.to}"


def _moved(ref: Referral, step: Step) -> Referral:
    if step.to == ACCEPTED:
        return replace(ref, state=ACCEPTED, holder=step.actor, clinician=step.clinician,
                       accepted_at=step.at)
    if step.to == REJECTED:
        return replace(ref, state=REJECTED, holder=step.actor, clinician=step.clinician,
                       rejected_reason=step.reason, closed_at=step.at)
    if step.to == IN_PROGRESS:
        return replace(ref, state=IN_PROGRESS, arrived_at=step.at)
    if step.to in (COMPLETED, CANCELLED):
        return replace(ref, state=step.to, closed_at=step.at)
    return ref


def fold(req: Request, steps: Sequence[Step], may_receive: Iterable[str], policy: Policy,
         now: datetime | None = None) -> Referral | None:
    """The referral's state after ``steps`` (sorted by ``seq`` here), and as of ``now``: a
    request nobody answered by its expiry is expired, and stays so. None until the sender's
    request is among the steps; a step before it is refused (nothing to move yet)."""
    may = tuple(may_receive)
    ordered = sorted(steps, key=lambda s: s.seq)
    first = next((s for s in ordered if s.to == REQUESTED and s.actor == req.sender), None)
    if first is None:
        return None
    ref = Referral(REQUESTED, first.at)
    expires = stamp(policy.expires(first.at))
    history: list[dict[str, Any]] = []
    for step in ordered:
        if ref.state == REQUESTED and step.at > expires:
            ref = replace(ref, state=EXPIRED, closed_at=expires)
        why = "no request yet" if step.seq < first.seq else refusal(ref, req, step, may)
        if why is None:
            ref = _moved(ref, step)
        history.append({"to": step.to, "by": step.actor, "clinician": step.clinician,
                        "reason": step.reason, "at": step.at, "event": step.event,
                        "applied": why is None, "refused": why})
    if ref.state == REQUESTED and now is not None and stamp(now) > expires:
        ref = replace(ref, state=EXPIRED, closed_at=expires)
    return replace(ref, history=tuple(history))


def due_and_breach(req: Request, ref: Referral, policy: Policy, now: datetime
                   ) -> tuple[str | None, bool]:
    """The acceptance deadline and whether it was missed: still waiting past it, or
    answered (accepted, rejected; withdrawn or expired while waiting) after it."""
    due = policy.due(ref.received, req.priority)
    if due is None:
        return None, False
    answered = ref.accepted_at or ref.closed_at
    if answered is not None:
        return stamp(due), instant(answered) > due
    return stamp(due), now > due


def month_of(at: str) -> str:
    return instant(at).astimezone(CONSORTIUM_TZ).strftime("%Y-%m")


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
