"""Consortium profile rules: what each resource must carry beyond base FHIR R4B.

Plain functions over the resource dict, free of I/O, returning (element path, message, code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hub.consent.rules import provision_issues

DICOM_UID_SYSTEM = "urn:dicom:uid"
OBSERVATION_STATUS = {
    "registered", "preliminary", "final", "amended", "corrected", "cancelled",
    "entered-in-error", "unknown",
}
REPORT_STATUS = OBSERVATION_STATUS | {"partial", "appended"}
EFFECTIVE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "effectiveTiming")

Found = Iterator[tuple[str, str, str]]


def _required(resource: dict, rtype: str, *elements: str) -> Found:
    for e in elements:
        if resource.get(e) in (None, "", [], {}):
            yield f"{rtype}.{e}", f"{rtype}.{e} is required by the consortium profile", "required"


def _observation(r: dict) -> Found:
    yield from _required(r, "Observation", "status", "code", "subject")
    if not any(r.get(e) for e in EFFECTIVE):
        yield "Observation.effective[x]", "Observation needs an effective[x] time", "required"
    status = r.get("status")
    if status and status not in OBSERVATION_STATUS:
        yield "Observation.status", f"unknown Observation status {status!r}", "code-invalid"


def _report(r: dict) -> Found:
    yield from _required(r, "DiagnosticReport", "status", "code", "subject")
    status = r.get("status")
    if status and status not in REPORT_STATUS:
        yield "DiagnosticReport.status", f"unknown report status {status!r}", "code-invalid"


def _imaging(r: dict) -> Found:
    yield from _required(r, "ImagingStudy", "subject")
    ids = r.get("identifier") or []
    if not any(isinstance(i, dict) and i.get("system") == DICOM_UID_SYSTEM and i.get("value")
               for i in ids):
        yield ("ImagingStudy.identifier",
               f"ImagingStudy needs a DICOM Study Instance UID identifier (system "
               f"{DICOM_UID_SYSTEM})", "required")


def _patient(r: dict) -> Found:
    yield from _required(r, "Patient", "identifier")


def _consent(r: dict) -> Found:
    # A consent about nobody would bind nobody; one the hub cannot honour is refused.
    yield from _required(r, "Consent", "patient")
    yield from provision_issues(r)


RULES: dict[str, Callable[[dict], Found]] = {
    "Consent": _consent,
    "Observation": _observation,
    "DiagnosticReport": _report,
    "ImagingStudy": _imaging,
    "Patient": _patient,
}


def profile_issues(resource: dict) -> Found:
    rule = RULES.get(resource.get("resourceType", ""))
    if rule is not None:
        yield from rule(resource)
    rid = resource.get("id")
    if rid is not None and not (isinstance(rid, str) and 0 < len(rid) <= 64):
        yield f"{resource.get('resourceType')}.id", "id must be 1-64 characters", "value"
    # The patient a resource names becomes its Kafka key and a key column (200 characters)
    # in every store: an id beyond FHIR's 64 characters would be accepted and stored nowhere.
    for element in ("subject", "patient"):
        ref = resource.get(element)
        text = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(text, str) and text.rstrip("/").split("/")[-2:-1] == ["Patient"] \
                and len(text.rstrip("/").split("/")[-1]) > 64:
            yield (f"{resource.get('resourceType')}.{element}.reference",
                   "a Patient id is at most 64 characters", "value")
