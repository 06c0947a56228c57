"""Reading fields, components and times out of python-hl7 segments, as plain text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import hl7

_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]")
_TIME = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?")
_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\", ".br": "\n"}


def first(value: Any) -> Any:
    """A field's first repetition (a plain string when the field has no components)."""
    if isinstance(value, hl7.Field):
        return value[0] if len(value) else ""
    return value


def field(seg: Any, n: int, *path: int) -> str:
    """Field ``n`` (HL7 numbering) of a segment as text; ``path[0]`` picks a component of
    its first repetition."""
    try:
        value = seg[n]
    except IndexError:
        return ""
    if path:
        return comp(first(value), path[0])
    return str(value or "").strip()


def reps(seg: Any, n: int) -> list[Any]:
    try:
        value = seg[n]
    except IndexError:
        return []
    return list(value) if isinstance(value, hl7.Field) else [value]


def comp(rep: Any, i: int) -> str:
    if isinstance(rep, str):
        return rep.strip() if i == 0 else ""
    try:
        return str(rep[i] or "").strip()
    except IndexError:
        return ""


def sub(rep: Any, i: int, j: int) -> str:
    """Subcomponent ``j`` of component ``i`` (``&``-separated), e.g. an HD inside an XON."""
    return comp(comp(rep, i).split("&"), j) if comp(rep, i) else ""


def unescape(text: str) -> str:
    """HL7 escape sequences (``\\F\\``, ``\\S\\``, ``\\.br\\``...) to the characters they
    stand for; an unknown sequence is kept as sent."""
    return re.sub(r"\\(F|S|T|R|E|\.br)\\", lambda m: _ESCAPES[m[1]], text)


def text_of(rep: Any) -> str:
    """A composite value (XTN, CX, FN, XPN...) as one readable line: its non-empty
    components, in order, separated by a space."""
    if isinstance(rep, str):
        return unescape(rep.strip())
    return " ".join(unescape(p) for p in (comp(rep, i) for i in range(len(rep))) if p)


def hl7_time(value: str, tz: tzinfo) -> str | None:
    """``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ]`` -> RFC 3339; without an offset the time is
    read in ``tz`` (the sending facility's zone)."""
    value = value.strip()
    m = _TIME.fullmatch(value)
    if not m or not value:
        return None
    y, mo, d, h, mi, s, offset = m.groups()
    try:
        dt = datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        zone: tzinfo = timezone(sign * timedelta(hours=int(offset[1:3]),
                                                 minutes=int(offset[3:5])))
    else:
        zone = tz
    return dt.replace(tzinfo=zone).isoformat()


def hl7_date(value: str, tz: tzinfo) -> str | None:
    when = hl7_time(value[:8], tz) if len(value) >= 8 else None
    return when[:10] if when else None


def fhir_id(value: str, limit: int = 64) -> str:
    return _ID_CHARS.sub("-", value)[:limit]
