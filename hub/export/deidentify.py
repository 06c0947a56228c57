"""De-identification for research exports (pure: the secret is passed in).

What goes: every ``identifier`` (national IDs, health cards, MRNs, order numbers), the
names, addresses, telecom, photos and contacts of people (Patient, Practitioner,
RelatedPerson, Person), all free text (narrative ``text``, ``CodeableConcept.text``,
``note``, ``comment``, ``valueString``, ``conclusion``, ``description``, a Reference's
``display``, attachments) and extensions (which can carry anything). Resource ids and
references become keyed pseudonyms, so resources of one patient still refer to each other.

What shifts: every date, dateTime and instant of a patient's resources by the same number
of days, derived from the patient's record key with HMAC-SHA256 under the hub's identity
secret (between -180 and +180 days, never 0). Intervals between a patient's events stay
true; calendar dates do not leak; nobody without the secret can undo the shift. A partial
date (``1958``, ``1958-03``) is kept as written: it identifies less than a shifted day.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime, timedelta
from typing import Any

MAX_SHIFT_DAYS = 180
PEOPLE = frozenset({"Patient", "Practitioner", "RelatedPerson", "Person"})
PERSONAL = frozenset({"name", "address", "telecom", "photo", "contact"})
# Free text and what can carry anything: dropped wherever they occur.
DROPPED = frozenset({"identifier", "text", "note", "comment", "valueString", "conclusion",
                     "description", "presentedForm", "extension", "modifierExtension",
                     "valueAttachment", "content"})
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([^/]+)$")


def _digest(secret: bytes, label: str, value: str) -> bytes:
    return hmac.new(secret, f"{label}|{value}".encode(), hashlib.sha256).digest()


def shift_days(secret: bytes, patient_key: str) -> int:
    """The patient's date shift: the same for every resource of that record, never 0."""
    n = int.from_bytes(_digest(secret, "date-shift", patient_key)[:8], "big")
    days = n % (2 * MAX_SHIFT_DAYS) - MAX_SHIFT_DAYS
    return days + 1 if days >= 0 else days  # -180..-1, 1..180


def pseudonym(secret: bytes, rtype: str, rid: str) -> str:
    """A stable id for ``rtype/rid`` that reveals neither the facility nor its local id."""
    return _digest(secret, "pseudonym", f"{rtype}/{rid}").hex()[:32]


def shift_date(value: str, days: int) -> str:
    """``value`` moved by ``days`` if it names a day (date, dateTime, instant); else as is."""
    m = _DAY.match(value) if value[:1].isdigit() else None
    if m is None:
        return value
    try:
        day = date.fromisoformat(m[1])
    except ValueError:
        return value
    if m[2] is None:
        return (day + timedelta(days=days)).isoformat()
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return (day + timedelta(days=days)).isoformat() + m[2]


def deidentify(resource: dict[str, Any], patient_key: str, secret: bytes) -> dict[str, Any]:
    """A de-identified copy of ``resource`` (as the read API presents it) of the patient
    record ``patient_key``."""
    days = shift_days(secret, patient_key)
    rtype = resource.get("resourceType", "")
    out = _walk(resource, days, secret)
    if isinstance(resource.get("id"), str):
        out["id"] = pseudonym(secret, rtype, resource["id"])
    if rtype in PEOPLE:
        for element in PERSONAL:
            out.pop(element, None)
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    # The source facility stays: it is a place, not a person.
    out["meta"] = {k: shift_date(v, days) if isinstance(v, str) else v
                   for k, v in meta.items() if k in ("lastUpdated", "source")}
    out["meta"]["security"] = [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "PSEUDED", "display": "pseudonymized"}]
    return out


def _walk(value: Any, days: int, secret: bytes) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in DROPPED or k == "meta":
                continue
            if k == "display" and "code" not in value:
                continue  # a Reference's display names a person; a Coding's names a code
            if k == "reference" and isinstance(v, str):
                # A relative reference keeps its type; anything else (a URL) could name a
                # system or a person, and goes.
                if m := _REFERENCE.match(v):
                    out[k] = f"{m[1]}/{pseudonym(secret, m[1], m[2])}"
                continue
            out[k] = _walk(v, days, secret)
        return out
    if isinstance(value, list):
        return [_walk(v, days, secret) for v in value]
    if isinstance(value, str):
        return shift_date(value, days)
    return value
