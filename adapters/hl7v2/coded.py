"""Coded values (CE, CWE, CNE) to CodeableConcepts, quantities and reference ranges.

HL7 v2 names a code system by a short mnemonic (HL7 table 0396); the ones with a FHIR
canonical URI get it, every other system (``L``, ``99USI``, a lab's own) becomes
``urn:hie:hl7v2:<mnemonic>`` so that no code is kept without the system it belongs to.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.hl7v2.fields import comp, first, unescape

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
SYSTEMS = {
    "LN": LOINC, "LOINC": LOINC, "SCT": SNOMED, "SNOMEDCT": SNOMED, "SNOMED-CT": SNOMED,
    "UCUM": UCUM, "I10": "http://hl7.org/fhir/sid/icd-10", "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm", "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "HL70078": "http://terminology.hl7.org/CodeSystem/v2-0078",
    "HL70070": "http://terminology.hl7.org/CodeSystem/v2-0070",
    "HL70487": "http://terminology.hl7.org/CodeSystem/v2-0487",
}
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_BETWEEN = re.compile(rf"\s*({_NUMBER})\s*(?:-|~|_|to)\s*({_NUMBER})\s*(\S.*?)?\s*")
_BOUND = re.compile(rf"\s*(<=?|>=?|≤|≥)\s*({_NUMBER})\s*([^\s:;,]+)?\s*([:;,].*)?")


def system_uri(mnemonic: str) -> str:
    return SYSTEMS.get(mnemonic.upper().replace(" ", ""), f"urn:hie:hl7v2:{mnemonic}")


def _coding(code: str, text: str, system: str) -> dict[str, Any] | None:
    if not code:
        return None
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system_uri(system)
    if text:
        coding["display"] = text
    return coding


def coded(value: Any) -> dict[str, Any]:
    """CE/CWE/CNE ``code^text^system^alt code^alt text^alt system[^...^original text]`` ->
    CodeableConcept with the primary coding first and the alternate kept as a second
    coding (a lab's local code beside its LOINC code: neither is thrown away)."""
    value = first(value)
    parts = [unescape(comp(value, i)) for i in range(9)]
    codings = [c for c in (_coding(parts[0], parts[1], parts[2]),
                           _coding(parts[3], parts[4], parts[5])) if c]
    out: dict[str, Any] = {"coding": codings} if codings else {}
    text = parts[8] or parts[1] or parts[4]  # CWE-9 original text, else a display
    if text:
        out["text"] = text
    return out


def codes(concept: dict[str, Any]) -> list[str]:
    """``system|code`` of every coding (for identities and messages)."""
    return [f"{c.get('system', '')}|{c['code']}" for c in concept.get("coding", [])]


def unit_of(seg_units: Any) -> tuple[str, str | None]:
    """OBX-6 ``code^text^system`` -> (unit as written, UCUM code or None).

    A unit whose system is named and is not UCUM is kept as text only: claiming UCUM for it
    would tell every reader a code that UCUM may not define. An unlabelled unit is taken as
    UCUM, as Chinese LIS send them (``mmol/L``), unless it holds a space, which no UCUM code
    does (``mg/g crea``)."""
    value = first(seg_units)
    code, system = unescape(comp(value, 0)), comp(value, 2)
    if not code:
        return "", None
    ucum = (not system or system.upper() == "UCUM") and not any(c.isspace() for c in code)
    return code, code if ucum else None


def quantity(value: float, unit: str, ucum: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
    if ucum:
        q.update({"system": UCUM, "code": ucum})
    return q


def reference_range(text: str, unit: str, ucum: str | None) -> list[dict[str, Any]]:
    """OBX-7 -> referenceRange: ``3.9-6.1``, ``70_105``, ``<30``, ``<10 ug/dl`` (a unit
    written in the range wins over OBX-6's), with the text kept whenever the range says more
    than its numbers (``<9 mcg/dL:  Acceptable background lead exposure``)."""
    text = unescape(text).strip()
    if not text:
        return []
    out: dict[str, Any] = {}
    if m := _BETWEEN.fullmatch(text):
        own = m[3] or ""
        u, code = (own, None if own.lower() != unit.lower() else ucum) if own else (unit, ucum)
        out = {"low": quantity(float(m[1]), u, code), "high": quantity(float(m[2]), u, code)}
    elif m := _BOUND.fullmatch(text):
        own = m[3] or ""
        u, code = (own, None if own.lower() != unit.lower() else ucum) if own else (unit, ucum)
        side = "high" if m[1] in ("<", "<=", "≤") else "low"
        out = {side: quantity(float(m[2]), u, code)}
        if m[4]:  # words after the bound: they are part of what the lab says
            out["text"] = text
    else:
        out = {"text": text}
    return [out]
