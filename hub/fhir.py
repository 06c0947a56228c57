"""Validation at the edge: fhir.resources (R4B, pinned by import path) plus consortium rules.

Everything that enters ``hie.events.v1`` passed :func:`validate`; inside the hub events are
parsed with orjson and never validated again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.invariants import invariant_issues
from hub.profiles import profile_issues

# The FHIR release the hub validates against (fhir.resources R4B, by import path).
FHIR_VERSION = "4.3.0"
# What the consortium exchanges; anything else is refused at every entry path, and the read
# API answers 404 for other types (the CapabilityStatement lists exactly these).
ACCEPTED_TYPES = (
    "Patient", "Observation", "DiagnosticReport", "ImagingStudy", "ServiceRequest",
    "Specimen", "Organization", "Practitioner", "PractitionerRole", "Encounter", "Condition",
    "Medication", "MedicationRequest", "MedicationStatement", "Device", "Endpoint", "Task",
    "Consent",
)


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, located by a FHIRPath-like element path (``Observation.code.coding[0]``)."""

    location: str
    diagnostics: str
    code: str = "invalid"
    severity: str = "error"


def parse_json(body: bytes) -> tuple[Any, list[Issue]]:
    try:
        return orjson.loads(body), []
    except orjson.JSONDecodeError as exc:
        return None, [Issue("(body)", f"not valid JSON: {exc}", code="structure")]


# Text no store can hold: PostgreSQL text and jsonb refuse NUL, and a lone UTF-16 surrogate
# is not a character at all (orjson refuses one in JSON, but code can build such a str).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# JSON can carry NUL only escaped (a raw control character is invalid JSON), so raw bytes
# without this escape hold no NUL and need no walk: one scan of the body on the hot path.
NUL_ESCAPE = b"\\u0000"


def unstorable_text(resource: Any, root: str, raw: bytes | None = None) -> list[Issue]:
    """Where ``resource`` holds text no store can keep (NUL, lone surrogates), located like
    ``Observation.note[0].text``; empty when it holds none.

    ``raw``, the JSON the resource was parsed from, lets the common case skip the walk: it
    is walked only when ``raw`` contains an escaped NUL (or when there is no ``raw``).
    """
    if raw is not None and NUL_ESCAPE not in raw:
        return []
    found: list[Issue] = []
    _walk(resource, root, found)
    return found


def _shown(text: str) -> str:
    """``text`` safe to put in an OperationOutcome that a store may keep."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _walk(value: Any, path: str, found: list[Issue]) -> None:
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            found.append(Issue(path, f"{path} contains a character no store can hold (NUL "
                                     "or a lone surrogate); remove it", "value"))
    elif isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            if _UNSTORABLE.search(key):
                key = _shown(key)
                found.append(Issue(f"{path}.{key}", f"element name {key!r} contains a "
                                   "character no store can hold", "structure"))
            _walk(v, f"{path}.{key}", found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]", found)


@functools.lru_cache(maxsize=256)  # bounded: resourceType comes from untrusted input
def _model_class(resource_type: str):
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        return None


def _path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or "function-" in str(part):
            continue  # pydantic's union/validator labels are not FHIR elements
        else:
            out += f".{part}"
    return out


def validate(resource: Any, expected_type: str | None = None, raw: bytes | None = None,
             types: Collection[str] = ACCEPTED_TYPES) -> list[Issue]:
    """Every problem with ``resource``; an empty list means it may enter the log.

    ``raw`` is the JSON ``resource`` came from, if any (it makes the text check cheaper);
    ``types`` the resource types accepted (the hub's own records, Person, are not a
    facility's to send).
    """
    return validate_many([resource], [expected_type], [raw], types)[0]


def validate_many(resources: Sequence[Any], expected_types: Sequence[str | None],
                  raws: Sequence[bytes | None], types: Collection[str] = ACCEPTED_TYPES
                  ) -> list[list[Issue]]:
    """``validate`` for a batch: each resource's issues, the same as one at a time.

    Done step by step across the batch rather than resource by resource: the models'
    validation (most of the cost) runs as one tight loop, which keeps its code and data hot
    in the processor's caches. Interleaved with the hub's own checks it ran ~25 % slower.
    """
    out: list[list[Issue] | None] = []
    models: list[Any] = []
    for resource, expected, raw in zip(resources, expected_types, raws, strict=True):
        refused, model = _screen(resource, expected, raw, types)
        out.append(refused)
        models.append(model)
    todo = [i for i, found in enumerate(out) if found is None]
    # The specification's invariants first: where a model error names the same element,
    # the issue carrying the invariant's key (per-1, ele-1, ...) is the one kept.
    invariants = {i: [Issue(loc, msg, "invariant") for loc, msg in invariant_issues(resources[i])]
                  for i in todo}
    failures: dict[int, Exception] = {}
    for i in todo:
        try:
            models[i].model_validate(resources[i])
        except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
            failures[i] = exc
    for i in todo:
        issues = invariants[i]
        if (exc := failures.get(i)) is not None:
            rtype = resources[i]["resourceType"]
            seen = {issue.location for issue in issues}
            if isinstance(exc, ValidationError):
                for err in exc.errors(include_url=False):
                    if (loc := _path(rtype, err["loc"])) not in seen:
                        issues.append(Issue(loc, err["msg"]))
            else:  # fhir.resources raises these for some shapes
                issues.append(Issue(rtype, str(exc)))
        seen = {issue.location for issue in issues}
        # Base FHIR already named these elements; say each problem once.
        issues.extend(Issue(loc, msg, code=code)
                      for loc, msg, code in profile_issues(resources[i]) if loc not in seen)
        out[i] = issues
    return out  # type: ignore[return-value]


def _screen(resource: Any, expected_type: str | None, raw: bytes | None,
            types: Collection[str]) -> tuple[list[Issue] | None, Any]:
    """(the issues that refuse ``resource`` before any model sees it, or None; its model)."""
    if not isinstance(resource, dict):
        return [Issue("(body)", "a FHIR resource must be a JSON object", code="structure")], None
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("resourceType", "resourceType is missing", code="required")], None
    if unstorable := unstorable_text(resource, _shown(rtype), raw):
        # Refused before anything else: accepted, it would reach no store (every consumer
        # would retry and dead-letter it), and other checks would echo the text back.
        return unstorable, None
    if expected_type and rtype != expected_type:
        return [Issue("resourceType",
                      f"resourceType is {rtype} but the URL names {expected_type}")], None
    model = _model_class(rtype)
    if model is None or rtype not in types:
        return [not_accepted(rtype)], None
    return None, model


def not_accepted(rtype: str) -> Issue:
    return Issue("resourceType", f"{_shown(rtype)[:64]} is not a resource type this hub "
                 f"accepts; it accepts {', '.join(ACCEPTED_TYPES)}", code="not-supported")


def operation_outcome(issues: list[Issue]) -> dict:
    """A FHIR OperationOutcome naming every issue and where it is."""
    if not issues:
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational",
                       "diagnostics": "accepted"}],
        }
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": i.severity,
                "code": i.code,
                "diagnostics": i.diagnostics,
                "expression": [i.location],
            }
            for i in issues
        ],
    }


def reference_id(ref: Any, resource_type: str) -> str | None:
    """The local id in a relative reference like ``Patient/p-1`` (or a full URL ending so)."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if not isinstance(text, str):
        return None
    parts = text.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


def patient_local_id(resource: dict) -> str | None:
    """Which of the facility's patients this resource is about, if any."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for element in ("subject", "patient", "for"):  # Task names its patient in ``for``
        found = reference_id(resource.get(element), "Patient")
        if found:
            return found
    return None


def patient_key(facility_id: str, resource: dict, members: Container[str] = ()) -> str:
    """The Kafka key: one patient's events share it so they stay in order.

    Until the master patient index links records across facilities, a patient is known as
    ``<facility>.<local id>``; events about no patient are keyed by their facility. A
    reference by hub id to a patient of one of ``members`` (``Patient/township-1.p-7``, as a
    receiving hospital names a referred patient), or to the facility's own, keys the event
    by that patient, so a referral's steps from both facilities travel in one partition, in
    order. Local ids may hold dots (``1.2.840``): only a member's id counts as a prefix.
    """
    local = patient_local_id(resource)
    if not local:
        return facility_id
    owner, dot, _ = local.partition(".")
    if dot and resource.get("resourceType") != "Patient" and (
            owner == facility_id or owner in members):
        return local
    return f"{facility_id}.{local}"
