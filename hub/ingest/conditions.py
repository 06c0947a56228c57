"""Conditional interactions in a Bundle: what each entry asks the shared record first.

* conditional create: ``POST`` with ``request.ifNoneExist`` (``identifier=system|value``);
* conditional update: ``PUT Patient?identifier=system|value``;
* versioned update: ``request.ifMatch`` (``W/"3"``), compared with the current versionId.

Only ``identifier`` criteria are understood (the one the consortium's systems send); any
other criterion is refused with a message rather than ignored. Pure: the gateway looks the
conditions up (``hub.record.read``) and hands the answers, :class:`Resolution`, to the
Bundle planner, which may run in a worker process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

# Cheap test on the raw body: does any entry carry a condition at all?
CONDITIONAL = re.compile(rb'"if(?:NoneExist|Match)"|"url"\s*:\s*"[^"]*\?')
_WEAK_ETAG = re.compile(r'^(?:W/)?"([^"]*)"$')


@dataclass(frozen=True, slots=True)
class Condition:
    """``identifier`` criterion (system may be None) on ``rtype``; ``target`` is the id an
    ``ifMatch`` needs the current version of."""

    rtype: str
    system: str | None = None
    value: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the shared record held for one entry's condition when the Bundle arrived:
    ``matches``, the facility's local ids of that type with the identifier; ``version``, the
    current versionId of the ``ifMatch`` target (None: no such resource)."""

    matches: tuple[str, ...] = ()
    version: str | None = None


def parse_criteria(rtype: str, query: str) -> Condition | str:
    """The condition in ``identifier=system|value``; a sentence saying why not otherwise."""
    pairs = parse_qsl(query, keep_blank_values=True)
    names = sorted({k for k, _ in pairs})
    if names != ["identifier"] or len(pairs) != 1:
        return (f"conditional criteria {query!r} are not supported: this hub matches on "
                "identifier=system|value only")
    system, bar, value = pairs[0][1].rpartition("|")
    if not value:
        return f"conditional criteria {query!r} name no identifier value"
    return Condition(rtype, system if bar and system else None, value)


def if_match_version(etag: str) -> str | None:
    """The version in ``W/"3"`` (or ``"3"``); None if it is not an ETag."""
    m = _WEAK_ETAG.match(etag.strip())
    return m[1] if m and m[1] else None


def entry_conditions(entry: Any) -> list[Condition]:
    """The conditions one Bundle entry asks about (none for a malformed entry: the planner
    refuses that with its own message)."""
    if not isinstance(entry, dict):
        return []
    request = entry.get("request")
    resource = entry.get("resource")
    if not isinstance(request, dict) or not isinstance(resource, dict):
        return []
    rtype = resource.get("resourceType")
    url = request.get("url")
    if not isinstance(rtype, str) or not isinstance(url, str):
        return []
    out: list[Condition] = []
    method = str(request.get("method") or "").upper()
    path, question, query = url.partition("?")
    if method == "POST" and isinstance(request.get("ifNoneExist"), str):
        found = parse_criteria(rtype, request["ifNoneExist"])
        if isinstance(found, Condition):
            out.append(found)
    elif method == "PUT" and question:
        found = parse_criteria(rtype, query)
        if isinstance(found, Condition):
            out.append(found)
    if method == "PUT" and isinstance(request.get("ifMatch"), str) and not question:
        out.append(Condition(rtype, target=path.rstrip("/").split("/")[-1]))
    return out
