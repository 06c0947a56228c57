"""What the registry knows about a member facility, and its FHIR Organization form.

Plain data and rules, no I/O. The consortium file and the registry's Organization events
are two spellings of the same :class:`FacilityRecord`; ``to_organization`` and
``from_organization`` are exact inverses (a test checks the round trip).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from hub.clock import CONSORTIUM_TZ

TIERS = (
    "village-clinic", "township-centre", "community-centre", "county-hospital", "city-hospital",
)
TIER_RANK = {t: i for i, t in enumerate(TIERS)}
HUB_TIER = "consortium-hub"  # the hub's own record: holds the keys the gateway signs with
SERVICES = ("imaging", "ecg", "pathology")
EQA_CATEGORIES = ("lab", "imaging", "ecg", "pathology")

FACILITY_SYSTEM = "urn:hie:facility"
GROUP_SYSTEM = "urn:hie:group"
TIER_SYSTEM = "urn:hie:tier"
EXT_READING = "urn:hie:ext:reading-centre"
EXT_EQA = "urn:hie:ext:eqa"
EXT_KEY = "urn:hie:ext:signing-key"
EXT_TIMEZONE = "urn:hie:ext:timezone"
HL7_NAME_SYSTEM = "urn:hie:hl7v2:sending-facility"  # a name the facility's systems use in MSH-4
EXT_REFERRALS = "urn:hie:ext:receives-referrals"


@dataclass(frozen=True, slots=True)
class Qualification:
    """An external quality assessment pass for one test category, valid for whole days
    from ``valid_from`` to ``valid_to`` inclusive (consortium calendar dates)."""

    category: str
    valid_from: date
    valid_to: date

    def covers(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One Ed25519 public key. Retired = replaced by a rotation (events signed before stay
    valid); revoked = compromised (nothing signed with it from then on is accepted)."""

    kid: str
    public_key: str
    created: datetime
    retired: datetime | None = None
    revoked: datetime | None = None

    def status_at(self, when: datetime) -> str:
        """'active', 'not-yet-valid', 'retired' or 'revoked' at ``when``."""
        if self.revoked is not None and when >= self.revoked:
            return "revoked"
        if self.retired is not None and when >= self.retired:
            return "retired"
        if when < self.created:
            return "not-yet-valid"
        return "active"


@dataclass(frozen=True, slots=True)
class FacilityRecord:
    id: str
    name: str
    tier: str
    group: str | None = None
    reading_centres: tuple[tuple[str, str], ...] = ()  # (service, facility id), sorted
    eqa: tuple[Qualification, ...] = ()
    keys: tuple[SigningKey, ...] = ()
    active: bool = True
    timezone: str | None = None  # IANA zone of its clocks; None: the consortium's
    hl7_names: tuple[str, ...] = ()  # MSH-4 names its HL7 systems send besides its id
    referrals: tuple[str, ...] = ()  # services it receives referrals for, sorted

    def zone(self) -> ZoneInfo:
        """The zone its systems' local times are in (HL7 times sent without an offset)."""
        return ZoneInfo(self.timezone) if self.timezone else CONSORTIUM_TZ

    def reading_centre(self, service: str) -> str | None:
        return dict(self.reading_centres).get(service)

    def eqa_valid(self, category: str, day: date) -> bool:
        return any(q.category == category and q.covers(day) for q in self.eqa)

    def key(self, kid: str) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def current_key(self) -> SigningKey | None:
        live = [k for k in self.keys if k.retired is None and k.revoked is None]
        return live[-1] if live else None

    def next_kid(self) -> str:
        numbers = [int(k.kid.rsplit("#", 1)[1]) for k in self.keys
                   if k.kid.rsplit("#", 1)[-1].isdigit()]
        return f"{self.id}#{max(numbers, default=0) + 1}"

    def with_rotated_key(self, public_key: str, at: datetime, revoke_old: bool = False
                         ) -> FacilityRecord:
        """A new current key; the previous live keys are retired (or revoked) at ``at``."""
        old = tuple(
            replace(k, revoked=at) if revoke_old and k.revoked is None
            else replace(k, retired=at) if k.retired is None and k.revoked is None else k
            for k in self.keys)
        return replace(self, keys=(*old, SigningKey(self.next_kid(), public_key, at)))

    def with_eqa(self, q: Qualification) -> FacilityRecord:
        """Set the qualification for ``q.category`` (one window per category: a renewal
        replaces it; history is in the log)."""
        others = tuple(x for x in self.eqa if x.category != q.category)
        return replace(self, eqa=tuple(sorted((*others, q), key=lambda x: x.category)))


def _dt(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sub(ext: dict) -> dict:
    out = {}
    for e in ext.get("extension", []):
        value = next((v for k, v in e.items() if k.startswith("value")), None)
        out[e["url"]] = value
    return out


def to_organization(rec: FacilityRecord) -> dict:
    """The FHIR R4B Organization the registry publishes for ``rec``."""
    ext: list[dict] = []
    for service, centre in rec.reading_centres:
        ext.append({"url": EXT_READING, "extension": [
            {"url": "service", "valueCode": service},
            {"url": "centre", "valueReference": {"reference": f"Organization/{centre}"}}]})
    for q in rec.eqa:
        ext.append({"url": EXT_EQA, "extension": [
            {"url": "category", "valueCode": q.category},
            {"url": "validFrom", "valueDate": q.valid_from.isoformat()},
            {"url": "validTo", "valueDate": q.valid_to.isoformat()}]})
    for k in rec.keys:
        parts = [{"url": "kid", "valueString": k.kid},
                 {"url": "publicKey", "valueBase64Binary": k.public_key},
                 {"url": "created", "valueDateTime": _dt(k.created)}]
        if k.retired is not None:
            parts.append({"url": "retired", "valueDateTime": _dt(k.retired)})
        if k.revoked is not None:
            parts.append({"url": "revoked", "valueDateTime": _dt(k.revoked)})
        ext.append({"url": EXT_KEY, "extension": parts})
    if rec.timezone:
        ext.append({"url": EXT_TIMEZONE, "valueString": rec.timezone})
    ext += [{"url": EXT_REFERRALS, "valueCode": service} for service in rec.referrals]
    org: dict = {
        "resourceType": "Organization", "id": rec.id, "active": rec.active,
        "identifier": [{"system": FACILITY_SYSTEM, "value": rec.id},
                       *({"system": HL7_NAME_SYSTEM, "value": n} for n in rec.hl7_names)],
        "name": rec.name,
        "type": [{"coding": [{"system": TIER_SYSTEM, "code": rec.tier}]}],
    }
    if rec.group:
        org["partOf"] = {"identifier": {"system": GROUP_SYSTEM, "value": rec.group},
                         "display": rec.group}
    if ext:
        org["extension"] = ext
    return org


def from_organization(org: dict) -> FacilityRecord:
    reading, eqa, keys, referrals = [], [], [], []
    timezone = None
    for e in org.get("extension", []):
        sub = _sub(e)
        if e.get("url") == EXT_TIMEZONE:
            timezone = e.get("valueString")
        elif e.get("url") == EXT_REFERRALS:
            referrals.append(e["valueCode"])
        elif e.get("url") == EXT_READING:
            reading.append((sub["service"], sub["centre"]["reference"].split("/", 1)[1]))
        elif e.get("url") == EXT_EQA:
            eqa.append(Qualification(sub["category"], date.fromisoformat(sub["validFrom"]),
                                     date.fromisoformat(sub["validTo"])))
        elif e.get("url") == EXT_KEY:
            keys.append(SigningKey(
                sub["kid"], sub["publicKey"], _parse_dt(sub["created"]),
                _parse_dt(sub["retired"]) if sub.get("retired") else None,
                _parse_dt(sub["revoked"]) if sub.get("revoked") else None))
    group = (org.get("partOf") or {}).get("identifier", {}).get("value")
    return FacilityRecord(
        id=org["id"], name=org.get("name", org["id"]),
        tier=org["type"][0]["coding"][0]["code"], group=group,
        reading_centres=tuple(sorted(reading)), eqa=tuple(eqa), keys=tuple(keys),
        active=org.get("active", True), timezone=timezone,
        hl7_names=tuple(i["value"] for i in org.get("identifier", [])
                        if i.get("system") == HL7_NAME_SYSTEM),
        referrals=tuple(sorted(referrals)))


def changed_fields(old: FacilityRecord | None, new: FacilityRecord) -> tuple[str, ...]:
    if old is None:
        return ("added",)
    return tuple(f for f in ("name", "tier", "group", "reading_centres", "eqa", "keys",
                             "active", "timezone", "hl7_names", "referrals")
                 if getattr(old, f) != getattr(new, f))
