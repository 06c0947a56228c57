"""What the gateway does with a Bundle, decided before anything is published.

* ``transaction``: all or nothing. One invalid entry rejects the whole Bundle (HTTP 400 with
  every problem); no entry is appended.
* ``batch`` and ``collection``: entries stand alone. Valid ones are appended, invalid ones
  are dead-lettered, and the response Bundle gives each entry its own status and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.facilities import Facility
from hub.fhir import Issue
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


def _entry(facility: Facility, i: int, entry: Any) -> Prepared:
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
    return prepare_upsert(facility, resource, url_id=url_id, assign_id=method == "POST")


def plan_bundle(facility: Facility, bundle: dict[str, Any]) -> BundlePlan:
    btype = bundle.get("type")
    if btype not in ACCEPTED_TYPES:
        return BundlePlan(str(btype), bundle_issues=[Issue(
            "Bundle.type", f"Bundle type {btype!r} is not accepted; send one of "
            f"{', '.join(ACCEPTED_TYPES)}", "not-supported")])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return BundlePlan(btype, bundle_issues=[Issue("Bundle.entry", "the Bundle has no entries",
                                                      "required")])
    return BundlePlan(btype, [_entry(facility, i, e) for i, e in enumerate(entries)])
