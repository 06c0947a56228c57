"""PID -> Patient: identifiers, name (XPN), address (XAD), sex, birth date, phone."""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Any

from adapters.hl7v2.fields import comp, fhir_id, field, hl7_date, reps, text_of, unescape
from hub.mpi.demographics import HEALTH_CARD_SYSTEM, NATIONAL_ID_SYSTEM

NATIONAL_ID_TYPES = {"NNCHN", "NN", "CZ", "ID", "SFZ"}
HEALTH_CARD_TYPES = {"HC", "JKK"}
# Chinese, Japanese and Korean names are written family name first with no space
# (张伟); everything else given names first, separated by spaces (Philip Johnson).
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_NAME_USE = {"L": "official", "D": "usual", "A": "nickname", "M": "maiden", "C": "old",
             "N": "nickname", "B": "official", "S": "anonymous", "T": "temp"}
_ADDRESS_USE = {"H": "home", "M": "home", "B": "work", "O": "work", "C": "temp",
                "BA": "old", "BDL": "old"}


class PatientRefused(Exception):
    """PID says too little to know whose results these are."""


def patient_id(pid: Any) -> str:
    """The facility's own id of the patient: PID-3's MR identifier, else its first."""
    ids = reps(pid, 3)
    mr = [r for r in ids if comp(r, 4).upper() == "MR" and comp(r, 0)]
    chosen = (mr or [r for r in ids if comp(r, 0)] or [None])[0]
    if chosen is None:
        raise PatientRefused("patient without identifiers: PID-3 is empty")
    return fhir_id(comp(chosen, 0))


def _identifiers(pid: Any, facility: str) -> list[dict[str, Any]]:
    out = []
    for r in reps(pid, 3):
        value, kind = comp(r, 0), comp(r, 4).upper()
        if not value:
            continue
        system = NATIONAL_ID_SYSTEM if kind in NATIONAL_ID_TYPES else \
            HEALTH_CARD_SYSTEM if kind in HEALTH_CARD_TYPES else \
            f"urn:hie:facility:{facility}:{'mrn' if kind in ('', 'MR') else kind.lower()}"
        out.append({"system": system, "value": value})
    return out


def human_name(rep: Any) -> dict[str, Any] | None:
    """XPN ``family^given^middle^suffix^prefix^degree^use`` -> HumanName; ``text`` as the
    name is written in its script (``张伟``, ``MELLODIAL RUFUSS``)."""
    family, given, middle, suffix, prefix = (unescape(comp(rep, i)) for i in range(5))
    if not (family or given or middle):
        return None
    givens = [g for g in (given, middle) if g]
    if _CJK.search(family + given):
        text = family + "".join(givens)
    else:
        text = " ".join(p for p in (prefix, *givens, family, suffix) if p)
    name: dict[str, Any] = {"text": text}
    if use := _NAME_USE.get(comp(rep, 6).upper()):
        name["use"] = use
    if family:
        name["family"] = family
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def address(rep: Any) -> dict[str, Any] | None:
    """XAD ``street^other^city^state^postal code^country^type`` -> Address."""
    street, other, city, state, postal, country = (unescape(comp(rep, i)) for i in range(6))
    if not any((street, other, city, state, postal, country)):
        return None
    out: dict[str, Any] = {}
    if use := _ADDRESS_USE.get(comp(rep, 6).upper()):
        out["use"] = use
    lines = [x for x in (street, other) if x]
    if _CJK.search(street + city + state):
        out["text"] = "".join(x for x in (state, city, street, other) if x)
    else:
        place = " ".join(x for x in (state, postal) if x)
        out["text"] = ", ".join(x for x in (*lines, city, place, country) if x)
    if lines:
        out["line"] = lines
    for key, value in (("city", city), ("state", state), ("postalCode", postal),
                       ("country", country)):
        if value:
            out[key] = value
    return out


def _phone(rep: Any) -> str:
    """XTN: the old free-text number (component 1), else ``+country area local xext``."""
    if comp(rep, 0):
        return unescape(comp(rep, 0))
    number = " ".join(p for p in (f"+{comp(rep, 4)}" if comp(rep, 4) else "", comp(rep, 5),
                                  comp(rep, 6)) if p)
    return f"{number} x{comp(rep, 7)}" if comp(rep, 7) and number else number


def phone_text(rep: Any) -> str:
    return _phone(rep) or comp(rep, 3) or text_of(rep)


def patient(pid: Any, facility: str, sent: str, tz: tzinfo) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": patient_id(pid),
                           "meta": {"lastUpdated": sent},
                           "identifier": _identifiers(pid, facility)}
    names = [n for n in map(human_name, reps(pid, 5)) if n]
    if names:
        res["name"] = names
    gender = {"M": "male", "F": "female", "O": "other", "U": "unknown",
              "A": "other", "N": "unknown"}.get(field(pid, 8, 0).upper())
    if gender:
        res["gender"] = gender
    if (birth := hl7_date(field(pid, 7, 0), tz)) is not None:
        res["birthDate"] = birth
    addresses = [a for a in map(address, reps(pid, 11)) if a]
    if addresses:
        res["address"] = addresses
    telecom = []
    for n, use in ((13, "home"), (14, "work")):
        for r in reps(pid, n):
            if number := _phone(r):
                telecom.append({"system": "phone", "value": number, "use": use})
            if comp(r, 3) and "@" in comp(r, 3):
                telecom.append({"system": "email", "value": comp(r, 3), "use": use})
    if telecom:
        res["telecom"] = telecom
    return res
