"""Pure rules of the shared record: hub-wide ids, reference namespacing, version order."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from hub.exactjson import loads_faithful

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def hub_id(facility_id: str, local_id: str) -> str:
    """Facilities choose their ids freely, so the hub prefixes them with the facility."""
    return f"{facility_id}.{local_id}"


# A relative reference, versioned (``Patient/p-1/_history/2``) or not.
_REFERENCE = re.compile(
    rb'"reference":"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})((?:/_history/[A-Za-z0-9\-.]{1,64})?)"')


def present(body: bytes | str, facility_id: str, source: str, last_updated: str
            ) -> dict[str, Any]:
    """The stored resource as the read API shows it: hub-wide id and references.

    The record keeps each resource exactly as its facility sent it (cheap to fold, and the
    original is never lost); this runs on read. ``Patient/p-1`` (or ``Patient/p-1/_history/2``)
    from facility ``township-1`` becomes ``Patient/township-1.p-1``, so a reader can follow
    references across facilities; ``meta.source`` is set and ``meta.lastUpdated`` filled in
    where the sender left it out. Nothing else changes: numbers keep their spelling
    (``hub.exactjson``).
    """
    return loads_faithful(present_json(body, facility_id, source, last_updated))


def present_json(body: bytes | str, facility_id: str, source: str, last_updated: str
                 ) -> bytes:
    """:func:`present` as JSON bytes, for a writer that needs no dict (the bulk export).
    The rewrite runs on orjson's canonical output (no whitespace, no escaped slashes),
    where a ``"reference":"`` sequence can only be a reference element, never text inside a
    string."""
    raw = body.encode() if isinstance(body, str) else body
    res = loads_faithful(raw)
    if isinstance(res.get("id"), str):
        res["id"] = hub_id(facility_id, res["id"])
    meta = res["meta"] = dict(res.get("meta") or {})
    meta.setdefault("lastUpdated", last_updated)
    meta["source"] = source  # provenance in the record: who published it
    prefix = facility_id.encode() + b"."
    return _REFERENCE.sub(
        lambda m: b'"reference":"' + m[1] + b"/" + prefix + m[2] + m[3] + b'"',
        orjson.dumps(res))


def utc_instant(value: str) -> str:
    """An ISO 8601 timestamp in one sortable form (UTC, microseconds, ``Z``).

    Every fold of the shared record calls this once per event; most timestamps have whole
    seconds and an offset of whole hours (``2026-11-30T08:15:00+08:00``), and those of one
    hour share their UTC date and hour, which are remembered (``_quick_instant``)."""
    return _quick_instant(value) or _utc_instant(value)


def _utc_instant(value: str) -> str:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    # Shifted by its offset rather than converted with astimezone (the same wall time, in
    # two thirds of the time); [:26] drops the offset.
    offset = dt.utcoffset()
    if offset:
        dt -= offset
    return dt.isoformat(timespec="microseconds")[:26] + "Z"


_SIXTY = frozenset(f"{n:02d}" for n in range(60))
# (local date and hour, offset) -> the UTC date and hour, e.g. ("2026-11-30T08", "+08:00")
# -> "2026-11-30T00"; bounded: the values come from senders.
_HOURS: dict[tuple[str, str], str] = {}
_HOURS_MAX = 4096


def _quick_instant(value: str) -> str | None:
    """``_utc_instant(value)`` for ``YYYY-MM-DDTHH:MM:SS`` with an offset of whole hours
    (``Z``, ``+08:00``), from the remembered hour; None for any other form."""
    if len(value) == 20 and value[19] == "Z":
        offset = "+00:00"
    elif len(value) == 25 and value[19] in "+-" and value[22:] == ":00":
        offset = value[19:]
    else:
        return None
    if value[13] != ":" or value[16] != ":" or value[14:16] not in _SIXTY \
            or value[17:19] not in _SIXTY:
        return None
    key = (value[:13], offset)
    hour = _HOURS.get(key)
    if hour is None:
        # The hour's first timestamp: the full reading (which also refuses what is no date).
        found = _utc_instant(f"{value[:13]}:00:00{offset}")
        if not found.endswith("Z"):
            return None
        hour = found[:13]
        if len(_HOURS) >= _HOURS_MAX:
            _HOURS.clear()
        _HOURS[key] = hour
    return f"{hour}{value[13:19]}.000000Z"


NO_VERSION = "000000000000"
ORDER_TIME_AT = len(NO_VERSION) + 2  # where the instant starts in a key (SQL substr, 1-based)
# After every instant: a deletion that names version N outranks version N itself.
_DELETED = "~"


def _version_number(version_id: Any) -> str:
    version = str(version_id) if version_id is not None else ""
    return f"{int(version):012d}" if version.isdigit() and len(version) <= 12 else NO_VERSION


def order_key(resource: dict[str, Any], event_time: str) -> str:
    """A string that sorts versions of one resource oldest to newest (see version_order)."""
    meta = resource.get("meta") or {}
    return version_order(meta.get("lastUpdated"), meta.get("versionId"), event_time)


def version_order(last_updated: str | None, version_id: Any, event_time: str) -> str:
    """The order of one resource's versions, as its source numbered them.

    ``<versionId, 12 digits>|<UTC instant>|<versionId>``: first ``meta.versionId`` when it is
    a number (the sender's own version counter: a late version 1 never replaces version 2,
    whatever arrived when), then ``meta.lastUpdated``, or, where the sender left it out, the
    event time (when the hub accepted it), then a non-numeric versionId as text. A version
    without a numeric versionId sorts below every numbered one.
    """
    when = utc_instant(last_updated or event_time)
    version = "" if version_id is None else str(version_id)
    return f"{_version_number(version_id)}|{when}|{version}"


def delete_order(version_id: Any, event_time: str) -> str:
    """Where a deletion sorts: right after the version it names (a later number outranks
    it: the resource was created again), else at its event time among unnumbered ones."""
    number = _version_number(version_id)
    if number != NO_VERSION:
        return f"{number}|{_DELETED}|"
    return f"{NO_VERSION}|{utc_instant(event_time)}|"


def deleted_version(data: bytes) -> Any:
    """The versionId a delete event names in its data, if any (see prepare_delete)."""
    if not data:
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    meta = parsed.get("meta") if isinstance(parsed, dict) else None
    return meta.get("versionId") if isinstance(meta, dict) else None


_NEW_FORM = re.compile(r"^[0-9]{12}\|")
_TWELVE_DIGITS = re.compile(r"[0-9]{12}")


def from_time_order(key: str) -> str:
    """An order key of the older, time-first form in :func:`version_order`'s form.

    Until the patient index ordered by the sender's versionId too, its keys were
    ``<UTC instant>|<versionId, 12 digits, or as sent when not a number; 0 if absent>|<rest>``,
    and its decisions already on the log name record versions that way. A key already in
    version order is returned as it is, so a rebuild folds old and new decisions alike. What
    the old form lost stays lost (a versionId ``0`` reads as absent, ``01`` as ``1``), but
    such a key still sorts with the version it named, at or above its own key and below any
    later version's: that version counts as decided, a later one does not.
    """
    if _NEW_FORM.match(key):
        return key
    when, _, rest = key.partition("|")
    version, _, tail = rest.partition("|")
    if _TWELVE_DIGITS.fullmatch(version):
        text = str(int(version)) if int(version) else ""
        return f"{version}|{when}|{text}|{tail}"
    return f"{NO_VERSION}|{when}|{version}|{tail}"


def order_time(key: str) -> str:
    """The UTC instant in an order key (``meta.lastUpdated``, else the event time)."""
    return key.split("|", 2)[1]
