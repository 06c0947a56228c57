"""Read API in FHIR shape: GET /fhir/{type}/{id} and search returning a searchset Bundle.

Every read of patient data is checked against the reader's scopes and leaves an AuditEvent
(committed before the answer is sent); a refused read leaves one too, with outcome 4.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from hub.access import audit_store
from hub.access.rules import (
    audit_event,
    may_read_patient,
    may_read_projection,
    readable_facilities,
)
from hub.api.consent_check import consent_excluded, refused_by_consent, withheld_links
from hub.api.deps import ContextDep, ReaderDep, SharedRecordReaderDep
from hub.api.guard import audit, forbidden
from hub.api.lab import imaging_reports, lab_search
from hub.api.outcome import FhirResponse, error
from hub.fhir import ACCEPTED_TYPES
from hub.lab.read import SearchError
from hub.mpi.service import linked_records
from hub.record.read import get_resource, search

router = APIRouter(prefix="/fhir", tags=["read"])
MAX_COUNT = 500
# Deeper than any real paging; bounded so a huge value is a 400, not a database error (an
# offset past 2**63 overflows PostgreSQL's bigint and SQLite's integer).
MAX_OFFSET = 10_000_000
PROJECTION = "shared_record"
LAB_PROJECTION = "lab"
IMAGING_PROJECTION = "imaging"
LAB_PARAMS = {"code", "date", "_sort", "category"}
REPORT_PARAMS = {"category"}
BASE_PARAMS = {"patient", "subject", "_id", "_count", "_offset"}
AUDIT_SCOPE = "audit"


def _patient_key(value: str) -> str:
    """``Patient/township-1.p-1``, a full URL, or the bare id all name the same patient."""
    return value.rstrip("/").split("/")[-1]


def _links(request: Request, offset: int, count: int, total: int) -> list[dict]:
    base = str(request.url).split("?")[0]
    params = {k: v for k, v in request.query_params.items() if k != "_offset"}
    links = [{"relation": "self", "url": str(request.url)}]
    if offset + count < total and count:
        links.append({"relation": "next",
                      "url": f"{base}?{urlencode({**params, '_offset': offset + count})}"})
    if offset > 0:
        links.append({"relation": "previous", "url":
                      f"{base}?{urlencode({**params, '_offset': max(0, offset - count)})}"})
    return links


@router.get("/AuditEvent")
def audit_trail(
    request: Request,
    ctx: ContextDep,
    reader: ReaderDep,
    patient: Annotated[str | None, Query()] = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=MAX_COUNT)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=MAX_OFFSET)] = 0,
) -> FhirResponse:
    """A patient's audit trail: who read their data, when, and what."""
    if not patient:
        return error(400, "AuditEvent search needs patient=Patient/<facility>.<id>", "required")
    key = _patient_key(patient)
    if not (may_read_projection(reader, AUDIT_SCOPE) and may_read_patient(reader, key)):
        audit(ctx, reader, "search-type", f"AuditEvent?patient={key}", {key}, "4")
        return forbidden(f"{reader.kind} {reader.id} may not read the audit trail of {key}")
    # Who read a patient, and what, is the patient's data too.
    withheld = withheld_links(ctx, reader, key)
    if refused := refused_by_consent(ctx, reader, key, "search-type",
                                     f"AuditEvent?patient={key}", withheld=withheld):
        return refused
    # The resident's trail at every facility the patient index links, that the reader may see
    # and no consent keeps it out of.
    keys = [k for k in linked_records(ctx.store, key)
            if may_read_patient(reader, k) and k not in withheld]
    total, records = audit_store.trail(ctx.store, keys, count, offset)
    audit(ctx, reader, "search-type", f"AuditEvent?patient={key}", set(keys))
    base_url = str(request.base_url).rstrip("/")
    return FhirResponse({
        "resourceType": "Bundle", "type": "searchset", "total": total,
        "link": _links(request, offset, count, total),
        "entry": [{"fullUrl": f"{base_url}/fhir/AuditEvent/{r.id}", "resource": audit_event(r),
                   "search": {"mode": "match"}} for r in records],
    })


@router.get("/{rtype}/{rid}")
def read(rtype: str, rid: str, ctx: ContextDep, reader: SharedRecordReaderDep
         ) -> FhirResponse:
    found = get_resource(ctx.store, rtype, rid) if rtype in ACCEPTED_TYPES else None
    if found is None:
        return error(404, f"{rtype}/{rid} is not in the shared record", "not-found")
    if not may_read_patient(reader, found.patient_key):
        audit(ctx, reader, "read", f"{rtype}/{rid}", {found.patient_key}, "4")
        return forbidden(f"{reader.kind} {reader.id} may not read patients of "
                         f"{found.patient_key.partition('.')[0]}")
    if found.deleted:
        return error(410, f"{rtype}/{rid} was deleted", "deleted")
    if refused := refused_by_consent(ctx, reader, found.patient_key, "read", f"{rtype}/{rid}"):
        return refused
    audit(ctx, reader, "read", f"{rtype}/{rid}", {found.patient_key})
    return FhirResponse(found.resource)


@router.get("/{rtype}")
def search_type(
    rtype: str,
    request: Request,
    ctx: ContextDep,
    reader: ReaderDep,
    patient: Annotated[str | None, Query()] = None,
    subject: Annotated[str | None, Query()] = None,
    id_: Annotated[str | None, Query(alias="_id")] = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=MAX_COUNT)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=MAX_OFFSET)] = 0,
) -> FhirResponse:
    if rtype not in ACCEPTED_TYPES:
        return error(404, f"{rtype} is not a resource type this hub serves (see "
                     "/fhir/metadata)", "not-found")
    params = request.query_params
    lab = (rtype == "Observation" and bool(LAB_PARAMS & set(params))) or (
        rtype == "DiagnosticReport" and "category" in params)
    known = BASE_PARAMS | {"_format"}
    if rtype in ("Observation", "DiagnosticReport"):
        known |= LAB_PARAMS if rtype == "Observation" else REPORT_PARAMS
    unknown = sorted(set(params) - known)
    if unknown:
        return error(400, f"unsupported search parameter(s): {', '.join(unknown)}; this "
                     f"endpoint supports {', '.join(sorted(known - {'_format'}))}",
                     "not-supported")
    projection = LAB_PROJECTION if lab else PROJECTION
    if rtype == "DiagnosticReport" and imaging_reports(params):
        projection = IMAGING_PROJECTION  # imaging and ECG reports come from there
    if not may_read_projection(reader, projection):
        return forbidden(f"{reader.kind} {reader.id} has no access to {projection}")
    who = patient or subject
    if rtype == "Patient" and who:
        id_, who = _patient_key(who), None
    key = _patient_key(who) if who else None
    what = f"{rtype}?{request.url.query}"
    if key is not None and not may_read_patient(reader, key):
        audit(ctx, reader, "search-type", what, {key}, "4")
        return forbidden(f"{reader.kind} {reader.id} may not read patients of "
                         f"{key.partition('.')[0]}")
    # The records whose consent keeps this reader out are left out: without a patient,
    # anyone's; with one, the linked records elsewhere of a resident the reader holds too.
    excluded = consent_excluded(ctx, reader) if key is None else withheld_links(ctx, reader,
                                                                                  key)
    if key is not None and (refused := refused_by_consent(ctx, reader, key, "search-type",
                                                          what, withheld=excluded)):
        return refused
    # The patient's records at every member facility, as the patient index links them:
    # after a merge the survivor's searches include the merged records, after an unlink not.
    keys = linked_records(ctx.store, key) if key is not None else None
    if lab:
        try:
            total, page = lab_search(ctx, rtype, params, keys, count, offset,
                                     readable_facilities(reader), excluded)
        except SearchError as exc:
            return error(400, str(exc), "value")
    else:
        total, page = search(ctx.store, rtype, keys, id_, count, offset,
                             readable_facilities(reader), excluded)
    audit(ctx, reader, "search-type", what, {k for _, k in page})
    base_url = str(request.base_url).rstrip("/")
    return FhirResponse({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": _links(request, offset, count, total),
        "entry": [{"fullUrl": f"{base_url}/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r, _ in page],
    })
