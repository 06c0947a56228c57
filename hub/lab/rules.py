"""What a lab result is, read from FHIR: plain functions, no I/O.

A lab Observation has the ``laboratory`` category (or none, and a LOINC code of a known
analyte); a lab DiagnosticReport has category
``LAB`` (HL7 v2 table 0074). Status lifecycle: ``registered`` is shown as pending,
``preliminary``/``final``/``amended``/``corrected`` are shown (a later version supersedes an
earlier one by the shared ordering rule), ``cancelled`` and ``entered-in-error`` disappear
from every view, as does a deleted resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.lab.units import Analyte, analyte_of, normalise
from hub.record.rules import utc_instant

LOINC = "http://loinc.org"
HIDDEN = frozenset({"cancelled", "entered-in-error"})
SHOWN = frozenset({"registered", "preliminary", "final", "amended", "corrected"})
ABNORMAL = {"H": "H", "HH": "HH", "HU": "H", "L": "L", "LL": "LL", "LU": "L", "A": "A",
            "AA": "AA", "N": "N", ">": "H", "<": "L"}


@dataclass(frozen=True, slots=True)
class LabResult:
    loinc: str | None
    analyte: str  # canonical analyte key, or the LOINC code when not in the table
    display: str
    status: str
    visible: bool
    effective: str | None  # UTC instant
    value_num: float | None
    value_text: str | None
    unit: str | None
    value_norm: float | None
    unit_norm: str | None
    flag: str | None  # H, HH, L, LL, A, AA, N
    flag_source: str | None  # "interpretation" or "reference-range"
    ref_low: float | None
    ref_high: float | None
    specimen: str | None
    performer: str | None  # facility id


def is_lab_observation(obs: dict[str, Any]) -> bool:
    """Category ``laboratory``; or, without any category, a LOINC code of a known analyte
    (a LIS that only fills in the report's category still reports lab results)."""
    cats = obs.get("category") or ()
    if any(c.get("code") == "laboratory" for cat in cats for c in cat.get("coding") or ()):
        return True
    return not cats and analyte_of(loinc_of(obs.get("code"))[0]) is not None


def is_lab_report(report: dict[str, Any]) -> bool:
    return any(c.get("code") in ("LAB", "laboratory") for cat in report.get("category") or ()
               for c in cat.get("coding") or ())


def loinc_of(code: dict[str, Any] | None) -> tuple[str | None, str]:
    codings = (code or {}).get("coding") or ()
    found = next((c for c in codings if c.get("system") == LOINC), None)
    any_code = found or next(iter(codings), {})
    display = any_code.get("display") or (code or {}).get("text") or any_code.get("code") or ""
    return (found or {}).get("code"), display


def effective_of(res: dict[str, Any]) -> str | None:
    when = res.get("effectiveDateTime") or res.get("effectiveInstant") or \
        (res.get("effectivePeriod") or {}).get("start") or res.get("issued")
    try:
        return utc_instant(when) if when else None
    except ValueError:
        return None


def _ref_range(obs: dict[str, Any]) -> tuple[float | None, float | None]:
    rr = next(iter(obs.get("referenceRange") or ()), None) or {}
    low, high = rr.get("low") or {}, rr.get("high") or {}
    return low.get("value"), high.get("value")


def flag_of(obs: dict[str, Any], value: float | None, low: float | None,
            high: float | None) -> tuple[str | None, str | None]:
    """The abnormal flag: the laboratory's own interpretation first, else the value against
    the reference range it gave (same unit, as FHIR requires)."""
    for interp in obs.get("interpretation") or ():
        for c in interp.get("coding") or ():
            if c.get("code") in ABNORMAL:
                return ABNORMAL[c["code"]], "interpretation"
    if value is None or (low is None and high is None):
        return None, None
    if high is not None and value > high:
        return "H", "reference-range"
    if low is not None and value < low:
        return "L", "reference-range"
    return "N", "reference-range"


def _facility(reference: str | None) -> str | None:
    if reference and reference.startswith("Organization/"):
        return reference.split("/", 1)[1]
    return None


def lab_result(obs: dict[str, Any], source_facility: str) -> LabResult:
    loinc, display = loinc_of(obs.get("code"))
    analyte: Analyte | None = analyte_of(loinc)
    status = obs.get("status") or "unknown"
    q = obs.get("valueQuantity") or {}
    value = q.get("value") if isinstance(q.get("value"), int | float) else None
    unit = q.get("code") or q.get("unit")
    text = obs.get("valueString") or (obs.get("valueCodeableConcept") or {}).get("text")
    if text is None and obs.get("valueCodeableConcept"):
        text = loinc_of(obs["valueCodeableConcept"])[1] or None
    norm = normalise(analyte, float(value), unit) if analyte and value is not None and unit \
        else None
    low, high = _ref_range(obs)
    flag, flag_source = flag_of(obs, value, low, high)
    specimen = (obs.get("specimen") or {})
    performer = next((_facility(p.get("reference")) for p in obs.get("performer") or ()
                      if _facility(p.get("reference"))), None)
    return LabResult(
        loinc=loinc, analyte=analyte.key if analyte else (loinc or display),
        display=analyte.display if analyte else display, status=status,
        visible=status in SHOWN, effective=effective_of(obs), value_num=value,
        value_text=text, unit=unit, value_norm=None if norm is None else round(norm, 4),
        unit_norm=analyte.unit if analyte and norm is not None else None, flag=flag,
        flag_source=flag_source, ref_low=low, ref_high=high,
        specimen=specimen.get("display") or specimen.get("reference"),
        performer=performer or source_facility)
