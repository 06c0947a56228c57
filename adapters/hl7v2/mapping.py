"""HL7 v2 -> FHIR R4B: ORU^R01 (lab results) and ADT^A01/A04/A08 (patients).

Parsing with python-hl7; everything else is plain functions. A message that cannot be
mapped raises :class:`Hl7Refused` with the acknowledgement code (``AR``: the message itself
is unacceptable — truncated, unknown type or version; ``AE``: a content error — an OBX
without a value, a patient without identifiers) and a reason a LIS operator can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import hl7

from hub import clock
from hub.clock import CONSORTIUM_TZ  # HL7 times without an offset are local times
from hub.mpi.demographics import HEALTH_CARD_SYSTEM, NATIONAL_ID_SYSTEM

VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ADT_EVENTS = ("A01", "A04", "A08")
LOINC = "http://loinc.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBX_STATUS = {"F": "final", "P": "preliminary", "R": "preliminary", "S": "preliminary",
              "C": "corrected", "X": "cancelled", "D": "entered-in-error",
              "W": "entered-in-error", "I": "registered", "U": "final"}
OBR_STATUS = {"F": "final", "P": "preliminary", "C": "corrected", "A": "partial",
              "X": "cancelled", "I": "registered", "O": "registered", "S": "registered",
              "R": "preliminary"}
FLAGS = {"H", "HH", "L", "LL", "N", "A", "AA", "<", ">", "HU", "LU"}
NATIONAL_ID_TYPES = {"NNCHN", "NN", "CZ", "ID", "SFZ"}
HEALTH_CARD_TYPES = {"HC", "JKK"}
_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class Hl7Refused(Exception):
    def __init__(self, code: str, reason: str, control_id: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.control_id = control_id


@dataclass
class Mapped:
    message_type: str
    control_id: str
    sending_facility: str
    version: str
    resources: list[dict[str, Any]] = field(default_factory=list)


def _first(value: Any) -> Any:
    """A field's first repetition (a plain string when the field has no components)."""
    if isinstance(value, hl7.Field):
        return value[0] if len(value) else ""
    return value


def _f(seg: Any, n: int, *path: int) -> str:
    """Field ``n`` (HL7 numbering) of a segment as text; ``path[0]`` picks a component of
    its first repetition."""
    try:
        value = seg[n]
    except IndexError:
        return ""
    if path:
        return _comp(_first(value), path[0])
    return str(value or "").strip()


def _reps(seg: Any, n: int) -> list[Any]:
    try:
        field = seg[n]
    except IndexError:
        return []
    return list(field) if isinstance(field, hl7.Field) else [field]


def _comp(rep: Any, i: int) -> str:
    if isinstance(rep, str):
        return rep.strip() if i == 0 else ""
    try:
        return str(rep[i] or "").strip()
    except IndexError:
        return ""


def hl7_time(value: str) -> str | None:
    """``YYYYMMDD[HHMM[SS[.S]]][+ZZZZ]`` -> RFC 3339 (local consortium time if no offset)."""
    m = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?",
                     value.strip())
    if not m or not value:
        return None
    y, mo, d, h, mi, s, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    if tz:
        sign = 1 if tz[0] == "+" else -1
        from datetime import timedelta, timezone
        dt = dt.replace(tzinfo=timezone(sign * timedelta(hours=int(tz[1:3]),
                                                         minutes=int(tz[3:5]))))
    else:
        dt = dt.replace(tzinfo=CONSORTIUM_TZ)
    return dt.isoformat()


def hl7_date(value: str) -> str | None:
    when = hl7_time(value[:8]) if len(value) >= 8 else None
    return when[:10] if when else None


def fhir_id(value: str) -> str:
    return _ID_CHARS.sub("-", value)[:64]


def _coded(value: Any) -> dict[str, Any]:
    """CE/CWE ``code^text^system`` -> CodeableConcept (``LN`` is LOINC)."""
    value = _first(value)
    code, text, system = _comp(value, 0), _comp(value, 1), _comp(value, 2)
    coding: dict[str, Any] = {"code": code} if code else {}
    if system:
        coding["system"] = LOINC if system.upper() in ("LN", "LOINC") else \
            f"urn:hie:hl7v2:{system}"
    if text:
        coding["display"] = text
    out: dict[str, Any] = {"coding": [coding]} if code else {}
    if text:
        out["text"] = text
    return out


def check_header(msg: Any) -> tuple[str, str, str, str, str]:
    """(type, trigger, control id, sending facility, version) or Hl7Refused."""
    try:
        msh = msg.segment("MSH")
    except KeyError as exc:
        raise Hl7Refused("AR", "not an HL7 v2 message: no MSH segment") from exc
    if len(msh) < 13:
        raise Hl7Refused("AR", "truncated message: MSH ends before MSH-12 (version)")
    control = _f(msh, 10)
    mtype, trigger = _f(msh, 9, 0), _f(msh, 9, 1)
    version = _f(msh, 12, 0) or _f(msh, 12)
    if version not in VERSIONS:
        raise Hl7Refused("AR", f"unsupported HL7 version {version!r}; accepted: "
                         f"{', '.join(VERSIONS)}", control)
    for seg in msg:
        if not _SEGMENT_ID.match(str(seg[0])):
            raise Hl7Refused("AR", f"truncated or garbled message: segment {str(seg)[:20]!r} "
                             "has no segment id", control)
    return mtype, trigger, control, _f(msh, 4, 0) or _f(msh, 4), version


def map_message(text: str, facility: str) -> Mapped:
    """Map one HL7 v2 message from ``facility`` to FHIR resources (facility-local ids)."""
    if not text.lstrip().startswith("MSH"):
        raise Hl7Refused("AR", "not an HL7 v2 message: it must start with MSH")
    try:
        msg = hl7.parse(text.replace("\n", "\r").strip("\r"))
    except (hl7.ParseException, IndexError, ValueError) as exc:
        raise Hl7Refused("AR", f"cannot parse the message: {exc}") from exc
    mtype, trigger, control, sender, version = check_header(msg)
    if sender and sender != facility:
        raise Hl7Refused("AR", f"MSH-4 sending facility {sender!r} is not {facility!r}, the "
                         "facility this listener speaks for", control)
    sent = hl7_time(_f(msg.segment("MSH"), 7)) or clock.now().astimezone(CONSORTIUM_TZ).isoformat()
    mapped = Mapped(f"{mtype}^{trigger}", control, sender or facility, version)
    try:
        if mtype == "ORU" and trigger == "R01":
            mapped.resources = _oru(msg, facility, sent)
        elif mtype == "ADT" and trigger in ADT_EVENTS:
            mapped.resources = [_patient(msg.segment("PID"), facility, sent)]
        else:
            raise Hl7Refused("AR", f"unsupported message type {mtype}^{trigger}; accepted: "
                             f"ORU^R01, ADT^{'/'.join(ADT_EVENTS)}", control)
    except Hl7Refused as exc:
        exc.control_id = exc.control_id or control
        raise
    except KeyError as exc:
        raise Hl7Refused("AE", f"{mtype}^{trigger} needs a {exc.args[0]} segment",
                         control) from exc
    return mapped


def _patient_id(pid: Any) -> str:
    reps = _reps(pid, 3)
    mr = [r for r in reps if _comp(r, 4).upper() == "MR" and _comp(r, 0)]
    first = (mr or [r for r in reps if _comp(r, 0)] or [None])[0]
    if first is None:
        raise Hl7Refused("AE", "patient without identifiers: PID-3 is empty")
    return fhir_id(_comp(first, 0))


def _patient(pid: Any, facility: str, sent: str) -> dict[str, Any]:
    pid_id = _patient_id(pid)
    identifiers = []
    for r in _reps(pid, 3):
        value, kind = _comp(r, 0), _comp(r, 4).upper()
        if not value:
            continue
        system = NATIONAL_ID_SYSTEM if kind in NATIONAL_ID_TYPES else \
            HEALTH_CARD_SYSTEM if kind in HEALTH_CARD_TYPES else \
            f"urn:hie:facility:{facility}:{'mrn' if kind in ('', 'MR') else kind.lower()}"
        identifiers.append({"system": system, "value": value})
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid_id,
                           "meta": {"lastUpdated": sent}, "identifier": identifiers}
    family, given = _f(pid, 5, 0), _f(pid, 5, 1)
    if family or given:
        res["name"] = [{"text": family + given, **({"family": family} if family else {}),
                        **({"given": [given]} if given else {})}]
    gender = {"M": "male", "F": "female", "O": "other", "U": "unknown"}.get(_f(pid, 8).upper())
    if gender:
        res["gender"] = gender
    if (birth := hl7_date(_f(pid, 7))) is not None:
        res["birthDate"] = birth
    addr = [r for r in _reps(pid, 11) if str(r).strip("^")]
    if addr:
        parts = [_comp(addr[0], i) for i in (3, 2, 0, 1)]  # state, city, street, other
        res["address"] = [{"text": "".join(p for p in parts if p),
                           **({"line": [_comp(addr[0], 0)]} if _comp(addr[0], 0) else {}),
                           **({"city": _comp(addr[0], 2)} if _comp(addr[0], 2) else {})}]
    phone = _f(pid, 13, 0) or _f(pid, 13)
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone}]
    return res


def _oru(msg: Any, facility: str, sent: str) -> list[dict[str, Any]]:
    pid = msg.segment("PID")
    patient = f"Patient/{_patient_id(pid)}"
    out: list[dict[str, Any]] = []
    report: dict[str, Any] | None = None
    specimen = ""
    n_obx = 0
    ids: set[str] = set()
    for seg in msg:
        sid = str(seg[0])
        if sid == "OBR":
            if report is not None:
                out.append(report)
            order = _f(seg, 3, 0) or _f(seg, 2, 0) or f"{_f(msg.segment('MSH'), 10)}-{seg[1]}"
            specimen = (_f(seg, 15, 0) and (_f(seg, 15, 1) or _f(seg, 15, 0))) or ""
            report = {
                "resourceType": "DiagnosticReport", "id": fhir_id(order),
                "meta": {"lastUpdated": sent},
                "status": OBR_STATUS.get(_f(seg, 25).upper(), "final"),
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
                "code": _coded(seg[4]) or {"text": "laboratory report"},
                "subject": {"reference": patient},
                "effectiveDateTime": hl7_time(_f(seg, 7)) or sent,
                "issued": hl7_time(_f(seg, 22)) or sent,
                "performer": [{"reference": f"Organization/{facility}"}],
                "result": [],
            }
        elif sid == "OBX":
            if report is None:
                raise Hl7Refused("AE", "OBX before any OBR: results need their order")
            n_obx += 1
            obs = _observation(seg, report, patient, facility, specimen, sent)
            if obs["id"] in ids:  # OBX-1 repeated (some senders number every OBX "1")
                obs["id"] = fhir_id(f"{obs['id']}-{n_obx}")
            ids.add(obs["id"])
            report["result"].append({"reference": f"Observation/{obs['id']}"})
            out.append(obs)
    if report is None:
        raise Hl7Refused("AE", "ORU^R01 without an OBR segment")
    out.append(report)
    if n_obx == 0:
        raise Hl7Refused("AE", "ORU^R01 without any OBX result")
    return out


def _range(text: str) -> list[dict[str, Any]]:
    m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*[-~]\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if m:
        return [{"low": {"value": float(m[1])}, "high": {"value": float(m[2])}}]
    m = re.fullmatch(r"\s*(<=?|>=?)\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if m:
        side = "high" if m[1].startswith("<") else "low"
        return [{side: {"value": float(m[2])}}]
    return [{"text": text}] if text else []


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _observation(seg: Any, report: dict, patient: str, facility: str, specimen: str,
                 sent: str) -> dict[str, Any]:
    vtype = _f(seg, 2).upper()
    set_id = _f(seg, 1) or str(len(report["result"]) + 1)
    code = _coded(seg[3])
    label = (code.get("text") or (code.get("coding") or [{}])[0].get("code") or
             f"OBX-{set_id}")
    status_code = _f(seg, 11).upper()
    status = OBX_STATUS.get(status_code)
    if status is None:
        raise Hl7Refused("AE", f"OBX {set_id} ({label}): unknown result status OBX-11 "
                         f"{status_code!r}; expected F, P, C, X, D, W, R, I or S")
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": fhir_id(f"{report['id']}-{set_id}"),
        "meta": {"lastUpdated": sent}, "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": code or {"text": label}, "subject": {"reference": patient},
        "effectiveDateTime": hl7_time(_f(seg, 14)) or report["effectiveDateTime"],
        "performer": [{"reference": f"Organization/{facility}"}],
    }
    if specimen:
        obs["specimen"] = {"display": specimen}
    raw = str(seg[5]) if len(seg) > 5 else ""
    unit = _f(seg, 6, 0) or _f(seg, 6)
    if not raw.strip() and status not in ("cancelled", "entered-in-error", "registered"):
        raise Hl7Refused("AE", f"OBX {set_id} ({label}) has no value (OBX-5 is empty) but "
                         f"status {status_code}")
    if raw.strip():
        if vtype == "NM":
            value = _number(raw)
            if value is None:
                raise Hl7Refused("AE", f"OBX {set_id} ({label}): NM value {raw!r} is not a "
                                 "number")
            obs["valueQuantity"] = _quantity(value, unit)
        elif vtype == "SN":
            obs.update(_structured_numeric(seg[5], unit, set_id, label))
        elif vtype in ("CE", "CWE", "CNE"):
            obs["valueCodeableConcept"] = _coded(seg[5]) or {"text": raw}
        elif vtype in ("ST", "TX", "FT", "IS", "ID"):
            obs["valueString"] = raw.replace("\\.br\\", "\n")
        else:
            raise Hl7Refused("AE", f"OBX {set_id} ({label}): value type {vtype!r} is not "
                             "supported (NM, SN, ST, TX, FT, CE, CWE)")
    if rr := _range(_f(seg, 7)):
        for part in ("low", "high"):
            if part in rr[0] and unit:
                rr[0][part].update({"unit": unit, "system": "http://unitsofmeasure.org",
                                    "code": unit})
        obs["referenceRange"] = rr
    flags = [f for f in (_comp(r, 0) for r in _reps(seg, 8)) if f]
    if flags:
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": f}]}
                                 for f in flags if f.upper() in FLAGS] or \
            [{"text": ",".join(flags)}]
    return obs


def _quantity(value: float, unit: str) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
    return q


def _structured_numeric(value: Any, unit: str, set_id: str, label: str) -> dict[str, Any]:
    """SN ``comparator^num1^separator^num2``: ``>^200``, ``^1^:^128``, ``^10^-^20``."""
    value = _first(value)
    comparator, n1, sep, n2 = (_comp(value, i) for i in range(4))
    a, b = _number(n1), _number(n2) if n2 else None
    if a is None:
        raise Hl7Refused("AE", f"OBX {set_id} ({label}): SN value has no number")
    if sep in (":", "/") and b is not None:
        return {"valueRatio": {"numerator": {"value": a}, "denominator": {"value": b}}}
    if sep in ("-", "+") and b is not None:
        return {"valueRange": {"low": _quantity(a, unit), "high": _quantity(b, unit)}}
    q = _quantity(a, unit)
    if comparator in ("<", "<=", ">", ">="):
        q["comparator"] = comparator
    return {"valueQuantity": q}
