"""What the gateway does with a Bundle, decided before anything is published.

* ``transaction``: all or nothing. One invalid entry rejects the whole Bundle (HTTP 400 with
  every problem); no entry is appended. ``urn:uuid:`` (and any other) fullUrls are resolved
  across the entries: each entry gets its id first (POST: a new one; PUT: the URL's; a
  conditional create or update: what the shared record matched), then every reference to
  an entry's fullUrl is rewritten to ``Type/<its id>``.
* ``batch`` and ``collection``: entries stand alone. Valid ones are appended, invalid ones
  are dead-lettered, and the response Bundle gives each entry its own status and outcome.
  A collection's entries carry no request: each is stored under its id, and one without an
  id gets a new one (as a POST would).

DELETE entries and operations (``POST ValueSet/$lookup``) are refused, naming what to use.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.collector import paused
from hub.exactjson import BOM, loads_exact, needs_exact
from hub.facilities import Facility
from hub.fhir import NUL_ESCAPE, Issue, parse_json, validate_many
from hub.ingest.conditions import Resolution, if_match_version, parse_criteria
from hub.ingest.prepare import Prepared, local_id, prepare_upsert
from hub.signing import hub_signer

ACCEPTED_TYPES = ("transaction", "batch", "collection")
_ENTRY_NEEDS_REQUEST = ("transaction", "batch")


@dataclass
class BundlePlan:
    bundle_type: str
    entries: list[Prepared] = field(default_factory=list)
    bundle_issues: list[Issue] = field(default_factory=list)

    @property
    def all_or_nothing(self) -> bool:
        return self.bundle_type == "transaction"

    def all_issues(self) -> list[Issue]:
        out = list(self.bundle_issues)
        for i, p in enumerate(self.entries):
            out.extend(Issue(x.location if x.location.startswith("Bundle.")
                             else f"Bundle.entry[{i}].resource.{x.location}",
                             x.diagnostics, x.code) for x in p.issues)
        return out


@dataclass
class _Target:
    """Where one entry goes, decided before any entry is prepared (references need it)."""

    rtype: str = ""
    rid: str | None = None  # None: the entry's own id (or a new one)
    assign: bool = False
    kept: str | None = None  # a conditional create matched this resource: nothing to write
    issues: list[Issue] = field(default_factory=list)


def _refused(where: str, message: str, code: str = "not-supported") -> _Target:
    return _Target(issues=[Issue(where, message, code)])


def _target(facility: Facility, btype: str, i: int, entry: Any,
            resolution: Resolution | None) -> _Target:
    at = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict):
        return _refused(at, f"entry {i} is not an object", "structure")
    request = entry.get("request")
    if request is not None and not isinstance(request, dict):
        return _refused(f"{at}.request", "request must be an object", "structure")
    method = str((request or {}).get("method") or "PUT").upper()
    url = str((request or {}).get("url") or "")
    path, question, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    # What the entry asks for is refused by name before anything else about it.
    if any(s.startswith("$") for s in segments):
        op = next(s for s in segments if s.startswith("$"))
        return _refused(f"{at}.request.url", f"{method} {url}: operations ({op}) are not "
                        "served by this hub; it takes resources to store (PUT or POST)")
    if method == "DELETE":
        return _refused(f"{at}.request.method", "DELETE entries are not accepted in Bundles; "
                        "use DELETE /fhir/{type}/{id}")
    if method not in ("PUT", "POST"):
        return _refused(f"{at}.request.method", f"request.method {method} is not supported: "
                        "this hub takes PUT and POST entries")
    if not isinstance(entry.get("resource"), dict):
        return _refused(at, f"entry {i} has no resource (bdl-5)", "required")
    rtype = str(entry["resource"].get("resourceType") or "")
    if request is None:
        if btype in _ENTRY_NEEDS_REQUEST:
            return _refused(f"{at}.request", f"bdl-3: every entry of a {btype} needs a "
                            "request (method and url)", "required")
        # A collection: stored under its own id, or a new one.
        return _Target(rtype, assign=True)
    if segments and segments[0] != rtype:
        return _refused(f"{at}.request.url", f"request.url {url!r} names {segments[0]} but "
                        f"the entry holds a {rtype}", "invalid")
    if method == "POST":
        criteria = request.get("ifNoneExist")
        if criteria is None:
            return _Target(rtype, assign=True)
        return _conditional(at, rtype, str(criteria), resolution, create=True)
    if question:
        return _conditional(at, rtype, query, resolution, create=False)
    rid = segments[-1] if len(segments) >= 2 else None
    if rid is None:
        return _refused(f"{at}.request.url", f"PUT {url!r} names no id: use Type/id, or "
                        "Type?identifier=system|value for a conditional update", "required")
    etag = request.get("ifMatch")
    if etag is not None:
        wanted = if_match_version(str(etag))
        current = resolution.version if resolution else None
        if wanted is None or wanted != current:
            now = f'W/"{current}"' if current else "no such resource"
            return _refused(f"{at}.request.ifMatch", f"ifMatch {etag} does not match the "
                            f"current version of {rtype}/{local_id(facility, rid)} ({now}): "
                            "412 Precondition Failed", "conflict")
    return _Target(rtype, rid)


def _conditional(at: str, rtype: str, criteria: str, resolution: Resolution | None,
                 create: bool) -> _Target:
    found = parse_criteria(rtype, criteria)
    where = f"{at}.request.ifNoneExist" if create else f"{at}.request.url"
    if isinstance(found, str):
        return _refused(where, found)
    matches = resolution.matches if resolution else ()
    if len(matches) > 1:
        return _refused(where, f"{criteria!r} matches {len(matches)} {rtype} resources of "
                        "this facility: 412 Precondition Failed", "multiple-matches")
    if create:
        return _Target(rtype, kept=f"{rtype}/{matches[0]}") if matches else \
            _Target(rtype, assign=True)
    return _Target(rtype, matches[0]) if matches else _Target(rtype, assign=True)


def _entry_id(facility: Facility, entry: Any, t: _Target) -> str | None:
    if t.issues or t.kept:
        return None
    if t.rid is not None:
        return local_id(facility, t.rid)
    own = entry["resource"].get("id")
    if isinstance(own, str) and own:
        return local_id(facility, own)
    return str(uuid.uuid4()) if t.assign else None


def _references(entries: list[Any], targets: list[_Target], ids: list[str | None]
                ) -> dict[str, str]:
    """Every entry's fullUrl mapped to the ``Type/id`` it is stored under."""
    out: dict[str, str] = {}
    for entry, t, rid in zip(entries, targets, ids, strict=True):
        full = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(full, str) or t.issues:
            continue
        if t.kept:
            out[full] = t.kept
        elif rid:
            out[full] = f"{t.rtype}/{rid}"
    return out


def _full_url_issues(entries: list[Any]) -> list[Issue]:
    """bdl-7 (fullUrl unique, unless versions of one resource) and bdl-8 (not versioned)."""
    seen: dict[tuple[str, Any], int] = {}
    out: list[Issue] = []
    for i, entry in enumerate(entries):
        full = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(full, str):
            continue
        if "/_history/" in full:
            out.append(Issue(f"Bundle.entry[{i}].fullUrl", "bdl-8: fullUrl cannot be a "
                             "version specific reference", "invariant"))
        res = entry.get("resource")
        version = ((res.get("meta") or {}).get("versionId")
                   if isinstance(res, dict) and isinstance(res.get("meta"), dict) else None)
        if (full, version) in seen:
            out.append(Issue(f"Bundle.entry[{i}].fullUrl", f"bdl-7: fullUrl {full!r} is "
                             f"also entry {seen[full, version]}'s", "invariant"))
        seen.setdefault((full, version), i)
    return out


def plan_bundle(facility: Facility, bundle: dict[str, Any], raw: bytes | None = None,
                members: Container[str] = (), resolutions: Mapping[int, Resolution] | None = None,
                exact: dict[str, Any] | None = None) -> BundlePlan:
    """``raw`` is the JSON the Bundle was parsed from (the text check looks into an entry
    only when the Bundle holds an escaped NUL); ``members`` the consortium's facility ids;
    ``resolutions`` what the shared record answered to each entry's conditions (by entry
    index); ``exact`` the Bundle parsed with its numbers as written (``hub.exactjson``)."""
    btype = bundle.get("type")
    if btype not in ACCEPTED_TYPES:
        return BundlePlan(str(btype), bundle_issues=[Issue(
            "Bundle.type", f"Bundle type {btype!r} is not accepted; send one of "
            f"{', '.join(ACCEPTED_TYPES)}", "not-supported")])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return BundlePlan(btype, bundle_issues=[Issue("Bundle.entry", "the Bundle has no entries",
                                                      "required")])
    if found := _full_url_issues(entries):
        return BundlePlan(btype, bundle_issues=found)
    resolutions = resolutions or {}
    targets = [_target(facility, btype, i, e, resolutions.get(i)) for i, e in enumerate(entries)]
    # Ids first, so that an entry may refer to one that comes after it.
    ids = [_entry_id(facility, e, t) for e, t in zip(entries, targets, strict=True)]
    references = _references(entries, targets, ids)
    exact_entries = exact["entry"] if exact is not None else None
    # Scanned once here, not once per entry: b"" tells each entry's check that there is
    # nothing to find, None that it must walk its resource to locate what the scan found.
    raw = b"" if raw is not None and NUL_ESCAPE not in raw else None
    plan = BundlePlan(btype)
    placed: dict[tuple[str, str], int] = {}
    # Every entry's resource validated first, in one pass (the costly step, kept in a tight
    # loop: hub.fhir.validate_many), then each entry prepared with its issues.
    upserts = [i for i, t in enumerate(targets) if not t.issues and not t.kept]
    validated = dict(zip(upserts, validate_many(
        [entries[i]["resource"] for i in upserts], [None] * len(upserts),
        [raw] * len(upserts)), strict=True))
    for i, (entry, t, rid) in enumerate(zip(entries, targets, ids, strict=True)):
        if t.issues:
            plan.entries.append(Prepared(None, t.issues))
            continue
        if t.kept:
            plan.entries.append(Prepared(None, [], kept=t.kept))
            continue
        p = prepare_upsert(facility, entry["resource"], url_id=rid, raw=raw, members=members,
                           exact=exact_entries[i]["resource"] if exact_entries else None,
                           references=references, sign=False, validated=validated[i])
        if p.ok and p.resource is not None and plan.all_or_nothing:
            # A transaction names each resource once (its entries happen at one moment); a
            # batch may carry several versions of one, applied in version order.
            where = (p.resource["resourceType"], p.resource["id"])
            if where in placed:
                p = Prepared(None, [Issue(f"Bundle.entry[{i}]", f"{where[0]}/{where[1]} is "
                                          f"also entry {placed[where]}: one entry per "
                                          "resource", "duplicate")])
            placed.setdefault(where, i)
        plan.entries.append(p)
    _sign(plan)
    return plan


def _sign(plan: BundlePlan) -> None:
    """One hub signature over the manifest of the Bundle's envelopes, not one per entry
    (``hub.signing``): each envelope still verifies on its own."""
    at = [i for i, p in enumerate(plan.entries) if p.envelope is not None]
    if not at or (plan.all_or_nothing and not all(p.ok for p in plan.entries)):
        return  # nothing to append (a refused transaction appends none of its entries)
    signed = hub_signer().sign_batch([plan.entries[i].envelope for i in at])  # type: ignore[misc]
    for i, env in zip(at, signed, strict=True):
        p = plan.entries[i]
        plan.entries[i] = Prepared(env, p.issues, p.resource, p.kept)


@dataclass
class BodyPlan:
    """What to do with a POSTed body: refuse it whole (``issues``), or follow ``plan``.

    Built where the CPU work happens (possibly a worker process), so it carries only what
    the gateway needs afterwards: envelopes, issues, a summary of each accepted resource and
    the bytes of each refused entry for the dead-letter topic.
    """

    issues: list[Issue] = field(default_factory=list)
    reason: str = ""
    plan: BundlePlan | None = None
    refused_entries: dict[int, bytes] = field(default_factory=dict)


def _summary(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta") or {}
    return {"resourceType": resource["resourceType"], "id": resource["id"],
            "meta": {k: meta[k] for k in ("versionId", "lastUpdated") if k in meta}}


def plan_body(facility: Facility, body: bytes, members: Container[str] = (),
              resolutions: Mapping[int, Resolution] | None = None) -> BodyPlan:
    """Parse, validate and prepare a POST /fhir body (a Bundle) from ``facility``;
    ``members`` are the consortium's facility ids (see ``prepare.foreign_owner``),
    ``resolutions`` the shared record's answers to the entries' conditions. The collector
    is paused meanwhile (``hub.collector``)."""
    with paused():
        return _plan_body(facility, body, members, resolutions)


def _plan_body(facility: Facility, body: bytes, members: Container[str],
               resolutions: Mapping[int, Resolution] | None) -> BodyPlan:
    body = body.removeprefix(BOM)  # tolerated at the start of an HTTP body
    bundle, issues = parse_json(body)
    if issues:
        return BodyPlan(issues, "invalid-json")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        rt = bundle.get("resourceType") if isinstance(bundle, dict) else None
        return BodyPlan([Issue("resourceType", f"POST /fhir takes a Bundle, got {rt!r}; post "
                               "single resources to /fhir/{type}")], "not-a-bundle")
    exact = loads_exact(body) if needs_exact(body, bundle) else None
    plan = plan_bundle(facility, bundle, body, members, resolutions, exact)
    if plan.bundle_issues:
        return BodyPlan(plan.bundle_issues, "invalid-bundle")
    refused = {}
    for i, p in enumerate(plan.entries):
        if p.envelope is not None:
            plan.entries[i] = Prepared(p.envelope, [], _summary(p.resource))
        elif p.kept:
            continue
        else:
            refused[i] = orjson.dumps(bundle["entry"][i])
    return BodyPlan(plan=plan, refused_entries=refused)
