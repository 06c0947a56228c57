"""Pure consent rules: may this reader, for this purpose, see this patient's data?

The consortium shares records by default (that is what it is for); a patient's FHIR
``Consent`` narrows it. Each ``deny`` provision names whom it keeps out (``actor``: a
facility, a tier, a group of facilities or an app; none means everyone), for which purposes
(``purpose``: v3-ActReason codes; none means every purpose) and when (``period``); a
``permit`` provision nested in a deny is an exception to it ("nobody but my township
centre"). A provision with ``type: permit`` at the top only carries nested denies. The
facility holding a record always reads its own record: a consent governs sharing, not a
facility's own chart. Only ``active`` consents count.

What the hub does not interpret (``data``, ``class``, ``code``, ``securityLabel``,
``dataPeriod``: consent to parts of a record) is refused at the gateway (``profile_issues``)
rather than silently ignored, so nobody believes a rule is honoured when it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hub.clock import CONSORTIUM_TZ

PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TREATMENT = "TREAT"  # a member facility reading, a referral's receiving facility
OPERATIONS = "HOPERAT"  # a downstream app of the consortium
RESEARCH = "HRESCH"  # a de-identified export
FACILITY_SYSTEM = "urn:hie:facility"
TIER_SYSTEM = "urn:hie:tier"
GROUP_SYSTEM = "urn:hie:group"
APP_SYSTEM = "urn:hie:app"
ACTOR_SYSTEMS = (FACILITY_SYSTEM, TIER_SYSTEM, GROUP_SYSTEM, APP_SYSTEM)
UNSUPPORTED = ("data", "class", "code", "securityLabel", "dataPeriod")

Actor = tuple[str, str]  # (system, value), e.g. (TIER_SYSTEM, "city-hospital")


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads, as a consent can name it, and why."""

    kind: str  # "facility" or "app"
    id: str
    purpose: str
    tier: str | None = None
    group: str | None = None

    def names(self) -> frozenset[Actor]:
        if self.kind == "app":
            return frozenset({(APP_SYSTEM, self.id)})
        out = {(FACILITY_SYSTEM, self.id)}
        if self.tier:
            out.add((TIER_SYSTEM, self.tier))
        if self.group:
            out.add((GROUP_SYSTEM, self.group))
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class Provision:
    actors: frozenset[Actor]  # empty: everyone
    purposes: frozenset[str]  # empty: every purpose
    start: datetime | None = None
    end: datetime | None = None
    exceptions: tuple[Provision, ...] = ()

    def covers(self, reader: Reader, at: datetime) -> bool:
        if self.start is not None and at < self.start:
            return False
        if self.end is not None and at > self.end:
            return False
        if self.actors and not (self.actors & reader.names()):
            return False
        return not self.purposes or reader.purpose in self.purposes


@dataclass(frozen=True, slots=True)
class ConsentRule:
    """One active Consent of one patient record: its deny provisions."""

    consent_id: str  # hub-wide, e.g. township-1.consent-7
    patient_key: str
    denies: tuple[Provision, ...]

    def refuses(self, reader: Reader, at: datetime) -> bool:
        return any(d.covers(reader, at) and not any(e.covers(reader, at) for e in d.exceptions)
                   for d in self.denies)


def _instant(value: Any, end: bool) -> datetime | None:
    """A FHIR date or dateTime as an instant; a date (``2027``, ``2027-03``, ``2027-03-01``)
    covers all of it: its first instant as a start, its last as an end. A date, or a time
    without an offset, is the consortium's calendar (a patient who withdraws consent "until
    1 March" means until that day ends where they live, not in UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if "T" in value:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return at if at.tzinfo else at.replace(tzinfo=CONSORTIUM_TZ)
        parts = [int(p) for p in value.split("-")]
        first = datetime(parts[0], *[*parts[1:], 1, 1][:2], tzinfo=CONSORTIUM_TZ)
        if not end:
            return first
        if len(parts) == 1:
            after = first.replace(year=first.year + 1)
        elif len(parts) == 2:
            after = first.replace(year=first.year + first.month // 12,
                                  month=first.month % 12 + 1)
        else:
            after = first + timedelta(days=1)
        return after - timedelta(microseconds=1)
    except (ValueError, TypeError):
        return None


def _actor(actor: Any) -> Actor | None:
    ref = actor.get("reference") if isinstance(actor, dict) else None
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if isinstance(text, str):
        rtype, _, rid = text.rstrip("/").rpartition("/")
        return (FACILITY_SYSTEM, rid) if rtype.endswith("Organization") and rid else None
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("system") in ACTOR_SYSTEMS and \
            isinstance(ident.get("value"), str):
        return ident["system"], ident["value"]
    return None


def _provision(p: dict) -> Provision:
    actors = frozenset(a for a in map(_actor, p.get("actor") or ()) if a is not None)
    purposes = frozenset(c.get("code") for c in p.get("purpose") or ()
                         if isinstance(c, dict) and isinstance(c.get("code"), str))
    period = p.get("period") if isinstance(p.get("period"), dict) else {}
    exceptions = tuple(_provision(n) for n in p.get("provision") or ()
                       if isinstance(n, dict) and n.get("type") == "permit")
    return Provision(actors, purposes, _instant(period.get("start"), False),
                     _instant(period.get("end"), True), exceptions)


def _denies(p: dict) -> Iterator[Provision]:
    if p.get("type") == "deny":
        yield _provision(p)
        return
    for nested in p.get("provision") or ():
        if isinstance(nested, dict) and nested.get("type") == "deny":
            yield _provision(nested)


def consent_rule(consent: dict, consent_id: str, patient_key: str) -> ConsentRule | None:
    """The rule a Consent states; None when it states none (not active, no deny)."""
    if consent.get("status") != "active" or not isinstance(consent.get("provision"), dict):
        return None
    denies = tuple(_denies(consent["provision"]))
    return ConsentRule(consent_id, patient_key, denies) if denies else None


def refusing(rules: Iterable[ConsentRule], reader: Reader, owner: str, at: datetime
             ) -> ConsentRule | None:
    """The first consent that keeps ``reader`` out of a record held by ``owner``; None if
    none does (the owner itself is never kept out of its own record)."""
    if reader.kind == "facility" and reader.id == owner:
        return None
    return next((r for r in rules if r.refuses(reader, at)), None)


def provision_issues(consent: dict) -> Iterator[tuple[str, str, str]]:
    """Profile issues of a Consent: what the hub would not honour, located."""
    def walk(p: Any, path: str) -> Iterator[tuple[str, str, str]]:
        if not isinstance(p, dict):
            return
        for element in UNSUPPORTED:
            if element in p:
                yield (f"{path}.{element}", f"the hub honours consent by reader, purpose and "
                       f"period only; {element} is not interpreted", "not-supported")
        for i, a in enumerate(p.get("actor") or ()):
            if _actor(a) is None:
                yield (f"{path}.actor[{i}].reference", "an actor is Organization/<facility> "
                       "or an identifier in " + ", ".join(ACTOR_SYSTEMS), "value")
        for i, n in enumerate(p.get("provision") or ()):
            yield from walk(n, f"{path}.provision[{i}]")

    yield from walk(consent.get("provision"), "Consent.provision")
