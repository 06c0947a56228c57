"""What the gateway does with a Bundle, decided before anything is published.

* ``transaction``: all or nothing. One invalid entry rejects the whole Bundle (HTTP 400 with
  every problem); no entry is appended.
* ``batch`` and ``collection``: entries stand alone. Valid ones are appended, invalid ones
  are dead-lettered, and the response Bundle gives each entry its own status and outcome.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.facilities import Facility
from hub.fhir import NUL_ESCAPE, Issue, parse_json
from hub.ingest.prepare import Prepared, prepare_upsert

ACCEPTED_TYPES = ("transaction", "batch", "collection")


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
            out.extend(Issue(f"Bundle.entry[{i}].resource.{x.location}", x.diagnostics, x.code)
                       for x in p.issues)
        return out


def _entry(facility: Facility, i: int, entry: Any, raw: bytes | None,
           members: Container[str]) -> Prepared:
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return Prepared(None, [Issue("(entry)", f"entry {i} has no resource", "required")])
    resource = entry["resource"]
    request = entry.get("request") or {}
    method = str(request.get("method") or "PUT").upper()
    url = str(request.get("url") or "")
    if method == "DELETE":
        return Prepared(None, [Issue("(entry)", "DELETE entries are not accepted in Bundles; "
                                     "use DELETE /fhir/{type}/{id}", "not-supported")])
    if method not in ("PUT", "POST"):
        return Prepared(None, [Issue("(entry)", f"request.method {method} is not supported",
                                     "not-supported")])
    url_id = None
    if method == "PUT" and "/" in url:
        url_id = url.split("?")[0].rstrip("/").split("/")[-1]
    return prepare_upsert(facility, resource, url_id=url_id, assign_id=method == "POST",
                          raw=raw, members=members)


def plan_bundle(facility: Facility, bundle: dict[str, Any], raw: bytes | None = None,
                members: Container[str] = ()) -> BundlePlan:
    """``raw`` is the JSON the Bundle was parsed from (the text check looks into an entry
    only when the Bundle holds an escaped NUL); ``members`` the consortium's facility ids."""
    btype = bundle.get("type")
    if btype not in ACCEPTED_TYPES:
        return BundlePlan(str(btype), bundle_issues=[Issue(
            "Bundle.type", f"Bundle type {btype!r} is not accepted; send one of "
            f"{', '.join(ACCEPTED_TYPES)}", "not-supported")])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return BundlePlan(btype, bundle_issues=[Issue("Bundle.entry", "the Bundle has no entries",
                                                      "required")])
    # Scanned once here, not once per entry: b"" tells each entry's check that there is
    # nothing to find, None that it must walk its resource to locate what the scan found.
    raw = b"" if raw is not None and NUL_ESCAPE not in raw else None
    return BundlePlan(btype, [_entry(facility, i, e, raw, members)
                              for i, e in enumerate(entries)])


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


def plan_body(facility: Facility, body: bytes, members: Container[str] = ()) -> BodyPlan:
    """Parse, validate and prepare a POST /fhir body (a Bundle) from ``facility``;
    ``members`` are the consortium's facility ids (see ``prepare.foreign_owner``)."""
    bundle, issues = parse_json(body)
    if issues:
        return BodyPlan(issues, "invalid-json")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        rt = bundle.get("resourceType") if isinstance(bundle, dict) else None
        return BodyPlan([Issue("resourceType", f"POST /fhir takes a Bundle, got {rt!r}; post "
                               "single resources to /fhir/{type}")], "not-a-bundle")
    plan = plan_bundle(facility, bundle, body, members)
    if plan.bundle_issues:
        return BodyPlan(plan.bundle_issues, "invalid-bundle")
    refused = {}
    for i, p in enumerate(plan.entries):
        if p.ok:
            plan.entries[i] = Prepared(p.envelope, [], _summary(p.resource))
        else:
            refused[i] = orjson.dumps(bundle["entry"][i])
    return BodyPlan(plan=plan, refused_entries=refused)
