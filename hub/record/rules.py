"""Pure rules of the shared record: hub-wide ids, reference namespacing, version order."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def hub_id(facility_id: str, local_id: str) -> str:
    """Facilities choose their ids freely, so the hub prefixes them with the facility."""
    return f"{facility_id}.{local_id}"


_REFERENCE = re.compile(rb'"reference":"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})"')


def present(body: bytes | str, facility_id: str, source: str, last_updated: str
            ) -> dict[str, Any]:
    """The stored resource as the read API shows it: hub-wide id and references.

    The record keeps each resource exactly as its facility sent it (cheap to fold, and the
    original is never lost); this runs on read. ``Patient/p-1`` from facility ``township-1``
    becomes ``Patient/township-1.p-1``, so a reader can follow references across facilities.
    The rewrite runs on orjson's canonical output (no whitespace, no escaped slashes), where a
    ``"reference":"`` sequence can only be a reference element, never text inside a string.
    """
    res = orjson.loads(body)
    if isinstance(res.get("id"), str):
        res["id"] = hub_id(facility_id, res["id"])
    meta = res["meta"] = dict(res.get("meta") or {})
    meta.setdefault("lastUpdated", last_updated)
    meta["source"] = source  # provenance in the record: who published it
    prefix = facility_id.encode() + b"."
    return orjson.loads(_REFERENCE.sub(
        lambda m: b'"reference":"' + m[1] + b"/" + prefix + m[2] + b'"', orjson.dumps(res)))


def utc_instant(value: str) -> str:
    """An ISO 8601 timestamp in one sortable form (UTC, microseconds, ``Z``)."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.utcoffset():
        dt = dt.astimezone(UTC)
    return dt.isoformat(timespec="microseconds")[:26] + "Z"


def order_key(resource: dict[str, Any], event_time: str) -> str:
    """A string that sorts versions of one resource oldest to newest.

    ``meta.lastUpdated`` first (the event time where a sender left it out), then
    ``meta.versionId`` when numeric; a late-arriving older version sorts lower and loses.
    """
    meta = resource.get("meta") or {}
    return version_order(meta.get("lastUpdated"), meta.get("versionId"), event_time)


def version_order(last_updated: str | None, version_id: Any, event_time: str) -> str:
    """:func:`order_key` from its parts (the projection's hot loop has them at hand)."""
    when = utc_instant(last_updated or event_time)
    version = str(version_id or "0")
    return f"{when}|{int(version):012d}" if version.isdigit() else f"{when}|{version}"
