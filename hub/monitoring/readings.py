"""A home meter's reading -> a FHIR Observation, and back to a rule's :class:`Reading`. Pure.

What a meter sends (JSON, over MQTT or HTTP)::

    {"time": "2026-11-23T07:30:00+08:00", "systolic": 146, "diastolic": 92, "pulse": 71}
    {"time": "2026-11-23T07:05:00+08:00", "glucose": 7.4, "unit": "mmol/L", "fasting": true}

``unit`` is ``mmol/L`` (default) or ``mg/dL``; ``id`` is optional (the meter's own reading
number). The Observation: LOINC 85354-9 panel with 8480-6 / 8462-4 components (``mm[Hg]``),
or glucose 15074-8 (mmol/L) / 2339-0 (mg/dL), UCUM units, the Device as ``device``. Its id
comes from the device and the measurement time, so the same reading sent twice is the same
resource, and its event id from the reading's content, so a resend after a lost
acknowledgement is the same event (consumers drop it).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.clock import CONSORTIUM_TZ
from hub.monitoring.rules import BP, GLUCOSE, Reading

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "urn:hie:category"
CATEGORY_CODE = "home-monitoring"
EXT_FASTING = "urn:hie:ext:fasting"
BP_PANEL, SBP, DBP, PULSE = "85354-9", "8480-6", "8462-4", "8867-4"
GLU_MOLAR, GLU_MASS = "15074-8", "2339-0"
MG_DL_PER_MMOL_L = 18.016  # glucose, molar mass 180.16 g/mol


class BadReading(ValueError):
    """The payload is not a reading this hub understands (a sentence saying why)."""


def parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadReading(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadReading("a reading is a JSON object")
    return doc


def _number(doc: dict, name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadReading(f"{name} must be a number, not {value!r}")
    return float(value)


def measured_at(doc: dict) -> datetime:
    text = doc.get("time")
    if not isinstance(text, str):
        raise BadReading("time is required (RFC 3339, e.g. 2026-11-23T07:30:00+08:00)")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadReading(f"time {text!r} is not RFC 3339") from exc
    # A meter without a zone speaks consortium time.
    return (t if t.tzinfo else t.replace(tzinfo=CONSORTIUM_TZ)).astimezone(UTC)


def values(kind: str, doc: dict) -> dict[str, float | None]:
    """The measured values in rule units (mmHg, glucose in mmol/L)."""
    if kind == BP:
        out = {"sbp": _number(doc, "systolic"), "dbp": _number(doc, "diastolic"),
               "pulse": _number(doc, "pulse")}
        if out["sbp"] is None or out["dbp"] is None:
            raise BadReading("a blood-pressure reading needs systolic and diastolic")
        return out
    glucose = _number(doc, "glucose")
    if glucose is None:
        raise BadReading("a glucose reading needs glucose")
    unit = doc.get("unit", "mmol/L")
    if unit not in ("mmol/L", "mg/dL"):
        raise BadReading(f"glucose unit must be mmol/L or mg/dL, not {unit!r}")
    return {"glucose": glucose / MG_DL_PER_MMOL_L if unit == "mg/dL" else glucose}


def _quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def observation(kind: str, device: str, patient: str, doc: dict) -> dict:
    """The Observation for one reading of ``device`` (its local id) bound to ``patient``
    (the local id at the device's facility)."""
    at = measured_at(doc)
    values(kind, doc)  # refuses what is not a reading before anything is built
    stamp = at.strftime("%Y%m%dT%H%M%S")
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": f"{device}-{stamp}", "status": "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY_CODE}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": at.isoformat().replace("+00:00", "Z"),
        "device": {"reference": f"Device/{device}"},
    }
    if kind == BP:
        obs["category"].append({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]})
        obs["code"] = {"coding": [{"system": LOINC, "code": BP_PANEL,
                                   "display": "Blood pressure panel"}]}
        obs["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": SBP,
                                  "display": "Systolic blood pressure"}]},
             "valueQuantity": _quantity(doc["systolic"], "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": DBP,
                                  "display": "Diastolic blood pressure"}]},
             "valueQuantity": _quantity(doc["diastolic"], "mm[Hg]")}]
        if doc.get("pulse") is not None:
            obs["component"].append({"code": {"coding": [{"system": LOINC, "code": PULSE,
                                                          "display": "Heart rate"}]},
                                     "valueQuantity": _quantity(doc["pulse"], "/min")})
    else:
        unit = doc.get("unit", "mmol/L")
        code = GLU_MASS if unit == "mg/dL" else GLU_MOLAR
        obs["code"] = {"coding": [{"system": LOINC, "code": code,
                                   "display": "Glucose in Blood"}]}
        obs["valueQuantity"] = _quantity(doc["glucose"], unit)
        if doc.get("fasting") is not None:
            obs["extension"] = [{"url": EXT_FASTING, "valueBoolean": bool(doc["fasting"])}]
    return obs


def event_id(device: str, obs: dict) -> str:
    """Derived from the reading itself: the same reading is the same event."""
    digest = hashlib.sha256(orjson.dumps(obs, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"dev-{device}-{digest[:24]}"


def _component(obs: dict, code: str) -> float | None:
    for c in obs.get("component") or ():
        if any(x.get("code") == code for x in (c.get("code") or {}).get("coding") or ()):
            return (c.get("valueQuantity") or {}).get("value")
    return None


def is_home_reading(obs: dict) -> bool:
    return any(c.get("system") == CATEGORY_SYSTEM and c.get("code") == CATEGORY_CODE
               for cat in obs.get("category") or () for c in cat.get("coding") or ())


def reading_of(obs: dict, hub_id: str) -> Reading | None:
    """The rule's view of a home-monitoring Observation, None if it is none."""
    codes = {c.get("code") for c in (obs.get("code") or {}).get("coding") or ()
             if c.get("system") == LOINC}
    time = obs.get("effectiveDateTime")
    if not time:
        return None
    time = datetime.fromisoformat(time.replace("Z", "+00:00")).astimezone(UTC).isoformat()
    if BP_PANEL in codes:
        sbp, dbp = _component(obs, SBP), _component(obs, DBP)
        if sbp is None or dbp is None:
            return None
        return Reading(hub_id, BP, time, sbp=float(sbp), dbp=float(dbp))
    if codes & {GLU_MOLAR, GLU_MASS}:
        q = obs.get("valueQuantity") or {}
        if q.get("value") is None:
            return None
        value = float(q["value"])
        if q.get("code") == "mg/dL" or q.get("unit") == "mg/dL":
            value /= MG_DL_PER_MMOL_L
        fasting = any(e.get("url") == EXT_FASTING and e.get("valueBoolean")
                      for e in obs.get("extension") or ())
        return Reading(hub_id, GLUCOSE, time, glucose=round(value, 3), fasting=fasting)
    return None
