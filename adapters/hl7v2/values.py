"""OBX-5 by its value type (OBX-2) -> an Observation's ``value[x]``.

The policy (README, "Fidelity"): every OBX becomes one Observation or the whole message is
refused. Numbers, coded values, text, dates and times map to their FHIR types; the composite
types that are text to a reader (a telephone number, a person's or organisation's name, an
identifier, an address) map to ``valueString`` as written. ED (encapsulated data: a PDF
report, an image) has no Observation value in R4: it becomes an Attachment in R5's
``valueAttachment`` carried by its cross-version extension (the mapping also lists it in the
report's ``presentedForm``). RP (a pointer to data held elsewhere) carries nothing the hub can
keep: a message with one is refused whole, naming the OBX, never accepted without it.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import tzinfo
from typing import Any

import hl7

from adapters.hl7v2.coded import coded, quantity
from adapters.hl7v2.fields import comp, first, hl7_time, text_of, unescape
from adapters.hl7v2.patient import phone_text

TEXT = {"ST", "TX", "FT", "ID", "IS"}
CODED = {"CE", "CWE", "CNE", "CF"}
COMPOSITE_TEXT = {"XTN", "CX", "FN", "XPN", "XAD", "XCN", "XON", "HD", "EI", "CP", "MO", "NA",
                  "MA", "PN", "AD", "TN", "CN"}
TIMES = {"DT", "DTM", "TS", "TM"}
VALUE_ATTACHMENT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value"
_MEDIA = {"AP": "application", "APPLICATION": "application", "IM": "image", "IMAGE": "image",
          "TEXT": "text", "TX": "text", "AU": "audio", "AUDIO": "audio", "VIDEO": "video",
          "MULTIPART": "multipart", "NS": "application"}
SUPPORTED = ("NM", "SN", *sorted(TEXT), *sorted(CODED), *sorted(TIMES),
             *sorted(COMPOSITE_TEXT), "ED")


class ValueRefused(Exception):
    """OBX-5 cannot be kept as an Observation value; the message is refused with this."""


def _number(text: str) -> float | None:
    """A decimal as HL7 writes it; ``nan``, ``inf`` and ``1e5`` are no NM values."""
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", text.strip()):
        return None
    return float(text)


def _structured_numeric(value: Any, unit: str, ucum: str | None) -> dict[str, Any]:
    """SN ``comparator^num1^separator^num2``: ``>^200``, ``^1^:^128``, ``^10^-^20``."""
    comparator, n1, sep, n2 = (comp(value, i) for i in range(4))
    a, b = _number(n1), _number(n2) if n2 else None
    if a is None:
        raise ValueRefused("SN value has no number")
    if sep in (":", "/") and b is not None:
        return {"valueRatio": {"numerator": {"value": a}, "denominator": {"value": b}}}
    if sep in ("-", "+") and b is not None:
        return {"valueRange": {"low": quantity(a, unit, ucum), "high": quantity(b, unit, ucum)}}
    q = quantity(a, unit, ucum)
    if comparator in ("<", "<=", ">", ">="):
        q["comparator"] = comparator
    return {"valueQuantity": q}


def attachment(value: Any) -> dict[str, Any]:
    """ED ``source^type^subtype^encoding^data`` -> Attachment (data as base64)."""
    kind, subtype, encoding = comp(value, 1), comp(value, 2), comp(value, 3).upper()
    data = "".join(comp(value, 4).split())
    if not data:
        raise ValueRefused("ED value has no data (component 5)")
    try:
        if encoding in ("BASE64", "B64"):
            raw = base64.b64decode(data, validate=True)
        elif encoding == "HEX":
            raw = bytes.fromhex(data)
        elif encoding in ("A", ""):
            raw = unescape(comp(value, 4)).encode()
        else:
            raise ValueRefused(f"ED encoding {comp(value, 3)!r} is not Base64, Hex or A")
    except (binascii.Error, ValueError) as exc:
        raise ValueRefused(f"ED data is not valid {comp(value, 3) or 'text'}") from exc
    media = _MEDIA.get(kind.upper(), kind.lower() or "application")
    out: dict[str, Any] = {"contentType": f"{media}/{subtype.lower() or 'octet-stream'}",
                           "data": base64.b64encode(raw).decode()}
    return out


def _time(vtype: str, raw: str, tz: tzinfo) -> dict[str, Any]:
    if vtype == "TM":
        digits = raw.split("+")[0].split("-")[0].split(".")[0]
        if len(digits) >= 4 and digits.isdigit():
            parts = [digits[0:2], digits[2:4], digits[4:6] or "00"]
            return {"valueTime": ":".join(parts)}
        raise ValueRefused(f"TM value {raw!r} is not a time (HHMM[SS])")
    when = hl7_time(raw, tz)
    if when is None:
        raise ValueRefused(f"{vtype} value {raw!r} is not a date/time")
    if vtype == "DT" or len(raw.strip()) <= 8:  # a date keeps its precision: no midnight
        digits = raw.strip()
        return {"valueDateTime": "-".join(x for x in (digits[0:4], digits[4:6],
                                                     digits[6:8]) if x)}
    return {"valueDateTime": when}


def observation_value(vtype: str, field_value: Any, unit: str, ucum: str | None,
                      tz: tzinfo) -> dict[str, Any]:
    """The ``value[x]`` element(s) for a non-empty OBX-5, or ValueRefused with why."""
    reps = list(field_value) if isinstance(field_value, hl7.Field) else [field_value]
    if vtype in TEXT:
        # TX and FT lines often arrive as repetitions: they are lines of one text.
        text = str(field_value).replace("~", "\n") if vtype in ("TX", "FT") else \
            str(field_value)
        return {"valueString": unescape(text.strip())}
    if len(reps) > 1 and vtype not in COMPOSITE_TEXT:
        raise ValueRefused(f"{len(reps)} repetitions of a {vtype} value; an Observation holds "
                           "one value (send one OBX per value)")
    value = first(field_value)
    raw = str(value).strip()
    if vtype == "NM":
        number = _number(raw)
        if number is None:
            raise ValueRefused(f"NM value {raw!r} is not a number")
        return {"valueQuantity": quantity(number, unit, ucum)}
    if vtype == "SN":
        return _structured_numeric(value, unit, ucum)
    if vtype in CODED:
        return {"valueCodeableConcept": coded(value) or {"text": unescape(raw)}}
    if vtype in TIMES:
        return _time(vtype, raw, tz)
    if vtype in COMPOSITE_TEXT:
        texts = [phone_text(r) if vtype in ("XTN", "TN") else text_of(r) for r in reps]
        return {"valueString": "; ".join(t for t in texts if t)}
    if vtype == "ED":
        return {"extension": [{"url": VALUE_ATTACHMENT, "valueAttachment": attachment(value)}]}
    if vtype == "RP":
        raise ValueRefused("value type RP points to data held elsewhere, which the hub "
                           "cannot keep; send the data itself (ED) or the result as text")
    raise ValueRefused(f"value type {vtype!r} is not supported ({', '.join(SUPPORTED)})"
                       if vtype else "OBX-2 (value type) is empty")
