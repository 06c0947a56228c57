"""Pure rules of the shared record: hub-wide ids, reference namespacing, version order."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def hub_id(facility_id: str, local_id: str) -> str:
    """Facilities choose their ids freely, so the hub prefixes them with the facility."""
    return f"{facility_id}.{local_id}"


def split_hub_id(value: str) -> tuple[str, str] | None:
    facility, sep, local = value.partition(".")
    return (facility, local) if sep and facility and local else None


def namespace(resource: dict[str, Any], facility_id: str) -> dict[str, Any]:
    """A copy whose id and relative references point at hub-wide ids.

    ``Patient/p-1`` from facility ``township-1`` becomes ``Patient/township-1.p-1``, so a
    reader of the shared record can follow references across facilities unambiguously.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "reference" and isinstance(v, str):
                    m = _RELATIVE.match(v)
                    out[k] = f"{m.group(1)}/{facility_id}.{m.group(2)}" if m else v
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(resource)
    if isinstance(resource.get("id"), str):
        out["id"] = hub_id(facility_id, resource["id"])
    return out


def utc_instant(value: str) -> str:
    """An ISO 8601 timestamp in one sortable form (UTC, microseconds, ``Z``)."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def order_key(resource: dict[str, Any], event_time: str) -> str:
    """A string that sorts versions of one resource oldest to newest.

    ``meta.lastUpdated`` first (the event time where a sender left it out), then
    ``meta.versionId`` when numeric; a late-arriving older version sorts lower and loses.
    """
    meta = resource.get("meta") or {}
    when = utc_instant(meta.get("lastUpdated") or event_time)
    version = str(meta.get("versionId") or "0")
    return f"{when}|{int(version):012d}" if version.isdigit() else f"{when}|{version}"
