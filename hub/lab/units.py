"""Analytes and their units: one canonical unit per analyte, so values from facilities that
report in mg/dL and in mmol/L line up in one trend.

Conversions come from pint (with its chemistry context and the analyte's molar mass for
mass <-> substance concentrations). pint is slow per call, so each (analyte, unit) pair is
asked once and the factor kept; a projection then multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pint


@dataclass(frozen=True, slots=True)
class Analyte:
    key: str
    display: str
    unit: str  # canonical, as UCUM
    loinc: tuple[str, ...]  # codes that measure this analyte (any unit)
    molar_mass: float | None = None  # g/mol, for mass <-> molar conversions


ANALYTES = (
    Analyte("glucose", "Glucose", "mmol/L",
            ("2339-0", "2345-7", "15074-8", "14749-6", "41653-7", "2341-6"), 180.156),
    Analyte("creatinine", "Creatinine", "umol/L", ("2160-0", "14682-9", "38483-4"), 113.12),
    Analyte("cholesterol", "Total cholesterol", "mmol/L", ("2093-3", "14647-2"), 386.65),
    Analyte("triglycerides", "Triglycerides", "mmol/L", ("2571-8", "14927-8"), 885.7),
    Analyte("hdl", "HDL cholesterol", "mmol/L", ("2085-9", "14646-4"), 386.65),
    Analyte("ldl", "LDL cholesterol", "mmol/L", ("13457-7", "2089-1", "22748-8"), 386.65),
    Analyte("urea", "Urea / BUN", "mmol/L", ("3094-0", "22664-7", "14937-7"), 28.014),
    Analyte("uric-acid", "Uric acid", "umol/L", ("3084-1", "14933-6"), 168.11),
    Analyte("hba1c", "Hemoglobin A1c", "%", ("4548-4", "17856-6", "59261-8")),
    Analyte("hemoglobin", "Hemoglobin", "g/L", ("718-7",)),
    Analyte("potassium", "Potassium", "mmol/L", ("2823-3", "6298-4")),
    Analyte("sodium", "Sodium", "mmol/L", ("2951-2", "2947-0")),
    Analyte("alt", "ALT", "U/L", ("1742-6", "1743-4")),
    Analyte("ast", "AST", "U/L", ("1920-8",)),
    Analyte("wbc", "WBC", "10*9/L", ("6690-2", "26464-8")),
    Analyte("platelets", "Platelets", "10*9/L", ("777-3", "26515-7")),
)
BY_LOINC = {code: a for a in ANALYTES for code in a.loinc}

# UCUM spellings pint reads differently; counts per volume are equal under these names.
_UCUM_TO_PINT = {"%": "percent", "10*9/L": "1e9/L", "10^9/L": "1e9/L", "10*3/uL": "1e9/L",
                 "10^3/uL": "1e9/L", "10*12/L": "1e12/L", "μmol/L": "umol/L",
                 "µmol/L": "umol/L", "mm[Hg]": "mmHg"}


@cache
def _registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def analyte_of(loinc: str | None) -> Analyte | None:
    return BY_LOINC.get(loinc or "")


@cache
def factor(analyte_key: str, unit: str) -> float | None:
    """Multiply a value in ``unit`` by this to get the analyte's canonical unit; None when
    the unit is not convertible (the value is then shown as reported, not normalised)."""
    a = next(x for x in ANALYTES if x.key == analyte_key)
    src, dst = _UCUM_TO_PINT.get(unit, unit), _UCUM_TO_PINT.get(a.unit, a.unit)
    if src == dst:
        return 1.0
    ureg = _registry()
    try:
        q = ureg.Quantity(1.0, src)
        if a.molar_mass is not None:
            with ureg.context("chemistry", mw=a.molar_mass * ureg("g/mol")):
                return float(q.to(dst).magnitude)
        return float(q.to(dst).magnitude)
    except (pint.errors.PintError, ValueError, AttributeError):
        return None


def normalise(analyte: Analyte, value: float, unit: str) -> float | None:
    """``value`` in the analyte's canonical unit, or None."""
    if analyte.key == "hba1c" and unit == "mmol/mol":
        return round(0.09148 * value + 2.152, 1)  # IFCC -> NGSP master equation
    f = factor(analyte.key, unit)
    return None if f is None else value * f
