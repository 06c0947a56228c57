"""Read API in FHIR shape: GET /fhir/{type}/{id} and search returning a searchset Bundle."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from hub.api.deps import ContextDep, FacilityDep
from hub.api.outcome import FhirResponse, error
from hub.record.read import get_resource, search

router = APIRouter(prefix="/fhir", tags=["read"])
MAX_COUNT = 500


def _patient_key(value: str) -> str:
    """``Patient/township-1.p-1``, a full URL, or the bare id all name the same patient."""
    return value.rstrip("/").split("/")[-1]


@router.get("/{rtype}/{rid}")
def read(rtype: str, rid: str, ctx: ContextDep, facility: FacilityDep) -> FhirResponse:
    found = get_resource(ctx.store, rtype, rid)
    if found is None:
        return error(404, f"{rtype}/{rid} is not in the shared record", "not-found")
    if found.deleted:
        return error(410, f"{rtype}/{rid} was deleted", "deleted")
    return FhirResponse(found.resource)


@router.get("/{rtype}")
def search_type(
    rtype: str,
    request: Request,
    ctx: ContextDep,
    facility: FacilityDep,
    patient: Annotated[str | None, Query()] = None,
    subject: Annotated[str | None, Query()] = None,
    id_: Annotated[str | None, Query(alias="_id")] = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=MAX_COUNT)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0)] = 0,
) -> FhirResponse:
    who = patient or subject
    if rtype == "Patient" and who:
        id_, who = _patient_key(who), None
    known = {"patient", "subject", "_id", "_count", "_offset", "_format"}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        return error(400, f"unsupported search parameter(s): {', '.join(unknown)}; this "
                     f"endpoint supports patient, subject, _id, _count, _offset",
                     "not-supported")
    total, page = search(ctx.store, rtype, _patient_key(who) if who else None, id_, count,
                         offset)
    base = str(request.url.remove_query_params(["_offset"])).split("?")[0]
    params = {k: v for k, v in request.query_params.items() if k != "_offset"}
    links = [{"relation": "self", "url": str(request.url)}]
    if offset + count < total and count:
        links.append({"relation": "next",
                      "url": f"{base}?{urlencode({**params, '_offset': offset + count})}"})
    if offset > 0:
        links.append({"relation": "previous", "url":
                      f"{base}?{urlencode({**params, '_offset': max(0, offset - count)})}"})
    base_url = str(request.base_url).rstrip("/")
    return FhirResponse({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [{"fullUrl": f"{base_url}/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in page],
    })
