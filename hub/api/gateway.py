"""The FHIR ingest gateway: POST /fhir (Bundle), POST/PUT/DELETE /fhir/{type}[/{id}].

A 2xx answer means the broker acknowledged the event (acks=all): from then on it is in the
log. Every rejection is an OperationOutcome, and the rejected input is dead-lettered.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request

from hub.api.deps import ContextDep, FacilityDep, HubContext
from hub.api.outcome import FhirResponse, error, outcome_response, unavailable
from hub.engine.deadletter import dead_letter
from hub.envelope import Envelope
from hub.errors import BrokerError
from hub.facilities import Facility
from hub.fhir import Issue, operation_outcome, parse_json
from hub.ingest.prepare import Prepared, local_id, prepare_delete, prepare_upsert
from hub.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from hub.record.read import current_patient_key
from hub.record.rules import hub_id

router = APIRouter(prefix="/fhir", tags=["ingest"])


async def read_body(ctx: HubContext, facility: Facility, request: Request
                    ) -> bytes | FhirResponse:
    """The request body, or a 413 OperationOutcome once it passes the configured limit.

    An oversized body is not kept (it would not fit the dead-letter topic either); its
    rejection is dead-lettered with an empty value so the refusal is still on record.
    """
    limit = ctx.settings.max_body_bytes
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else 0
    chunks: list[bytes] = []
    if size <= limit:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
    if size > limit:
        issue = Issue("(body)", f"the body is larger than the limit of {limit} bytes; split "
                      "it into several Bundles", "too-costly")
        return await _reject(ctx, facility, 413, [issue], b"", "too-large")
    return b"".join(chunks)


async def _dead_letter(ctx: HubContext, facility: Facility | None,
                       refused: list[tuple[bytes, str, list[Issue]]]) -> None:
    """Dead-letter refused inputs (body, reason, issues) in one publish, so nothing is lost.

    If the broker is down the caller still learns what was wrong; the outage shows elsewhere.
    """
    headers = [("hub_facility", facility.id.encode())] if facility else []
    with contextlib.suppress(BrokerError):
        await ctx.publisher.publish_raw(ctx.settings.topics.deadletter, [
            dead_letter("gateway", reason, body, None, headers, operation_outcome(issues))
            for body, reason, issues in refused])
    for _, reason, _ in refused:
        EVENTS_REJECTED.labels("gateway", reason).inc()


async def _reject(ctx: HubContext, facility: Facility | None, status: int, issues: list[Issue],
                  body: bytes, reason: str) -> FhirResponse:
    """Dead-letter what was refused, then answer with the outcome."""
    await _dead_letter(ctx, facility, [(body, reason, issues)])
    return outcome_response(status, issues)


async def _append(ctx: HubContext, facility: Facility, envelopes: list[Envelope]
                  ) -> FhirResponse | None:
    try:
        await ctx.publisher.publish(ctx.settings.topics.events, envelopes)
    except BrokerError as exc:
        return unavailable(f"the event log is unavailable, nothing was accepted: {exc}")
    EVENTS_ACCEPTED.labels("gateway", facility.id).inc(len(envelopes))
    return None


def _created(facility: Facility, p: Prepared) -> dict[str, Any]:
    assert p.envelope is not None and p.resource is not None
    location = f"{p.resource['resourceType']}/{hub_id(facility.id, p.resource['id'])}"
    return {"status": "201 Created", "location": location,
            "etag": f'W/"{(p.resource.get("meta") or {}).get("versionId", "1")}"',
            "lastModified": p.resource["meta"]["lastUpdated"]}


async def _single(ctx: HubContext, facility: Facility, body: bytes, rtype: str,
                  url_id: str | None) -> FhirResponse:
    resource, issues = parse_json(body)
    if issues:
        return await _reject(ctx, facility, 400, issues, body, "invalid-json")
    p = prepare_upsert(facility, resource, rtype, url_id=url_id, assign_id=url_id is None)
    if not p.ok:
        # 400: not a resource of the type the URL names; 422: a resource breaking rules.
        status = 400 if any(i.location in ("resourceType", "(body)") for i in p.issues) else 422
        return await _reject(ctx, facility, status, p.issues, body, "invalid-resource")
    failed = await _append(ctx, facility, [p.envelope])
    if failed:
        return failed
    resp = _created(facility, p)
    return FhirResponse(p.resource, status_code=201,
                        headers={"Location": f"/fhir/{resp['location']}", "ETag": resp["etag"]})


@router.post("")
@router.post("/")
async def post_bundle(request: Request, ctx: ContextDep, facility: FacilityDep) -> FhirResponse:
    body = await read_body(ctx, facility, request)
    if isinstance(body, FhirResponse):
        return body
    planned = await ctx.checks.plan_body(facility, body)
    if planned.issues:
        return await _reject(ctx, facility, 400, planned.issues, body, planned.reason)
    plan = planned.plan
    assert plan is not None
    if plan.all_or_nothing and not all(p.ok for p in plan.entries):
        return await _reject(ctx, facility, 400, plan.all_issues(), body, "invalid-transaction")
    good = [p for p in plan.entries if p.ok]
    failed = await _append(ctx, facility, [p.envelope for p in good])
    if failed:
        return failed
    out_entries = []
    refused = []
    for i, p in enumerate(plan.entries):
        if p.ok:
            out_entries.append({"response": _created(facility, p)})
        else:
            refused.append((planned.refused_entries[i], "invalid-entry", p.issues))
            out_entries.append({"response": {"status": "400 Bad Request",
                                             "outcome": operation_outcome(p.issues)}})
    if refused:
        await _dead_letter(ctx, facility, refused)
    rtype = {"transaction": "transaction-response"}.get(plan.bundle_type, "batch-response")
    return FhirResponse({"resourceType": "Bundle", "type": rtype, "entry": out_entries})


async def _from_body(ctx: HubContext, facility: Facility, request: Request, rtype: str,
                     rid: str | None) -> FhirResponse:
    body = await read_body(ctx, facility, request)
    if isinstance(body, FhirResponse):
        return body
    return await _single(ctx, facility, body, rtype, rid)


@router.post("/{rtype}")
async def create(rtype: str, request: Request, ctx: ContextDep, facility: FacilityDep
                 ) -> FhirResponse:
    return await _from_body(ctx, facility, request, rtype, None)


@router.put("/{rtype}/{rid}")
async def update(rtype: str, rid: str, request: Request, ctx: ContextDep, facility: FacilityDep
                 ) -> FhirResponse:
    return await _from_body(ctx, facility, request, rtype, rid)


@router.delete("/{rtype}/{rid}")
async def delete(rtype: str, rid: str, ctx: ContextDep, facility: FacilityDep) -> FhirResponse:
    local = local_id(facility, rid)
    # A sync query on the event loop: one primary-key lookup, cheaper than a thread hop.
    key = current_patient_key(ctx.store, rtype, hub_id(facility.id, local))
    if key is None:
        return error(404, f"{rtype}/{rid} is not in the shared record for {facility.id}",
                     "not-found")
    env = prepare_delete(facility, rtype, local, key)
    failed = await _append(ctx, facility, [env])
    return failed or FhirResponse(operation_outcome([]), status_code=200)
