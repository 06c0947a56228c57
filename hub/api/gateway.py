"""The FHIR ingest gateway: POST /fhir (Bundle), POST/PUT/DELETE /fhir/{type}[/{id}].

A 2xx answer means the event is durable: the broker acknowledged it (acks=all) and, with
``ack_after=journal`` (the default with the bundled broker), the SQL journal committed it.
Every rejection is an OperationOutcome, and the rejected input is dead-lettered: kept in SQL
before the answer is sent (503 if it cannot be), then published to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request

from hub.api.deps import ContextDep, FacilityDep, HubContext
from hub.api.outcome import FhirResponse, error, outcome_response, unavailable
from hub.api.publish import publish_acknowledged
from hub.deadletters.letter import DeadLetter, about_resource, refuse
from hub.envelope import Envelope
from hub.errors import BrokerError, NotAcknowledged, StoreError
from hub.exactjson import BOM, loads_exact, needs_exact
from hub.facilities import Facility
from hub.fhir import ACCEPTED_TYPES, Issue, not_accepted, operation_outcome, parse_json
from hub.ingest.bundle import plan_bundle
from hub.ingest.conditions import CONDITIONAL, Resolution, entry_conditions
from hub.ingest.prepare import (
    Prepared,
    foreign_id_issue,
    local_id,
    prepare_delete,
    prepare_upsert,
)
from hub.metrics import DEADLETTERS_UNRECORDED, EVENTS_ACCEPTED, EVENTS_REJECTED
from hub.record.read import live_version, resolve_conditions
from hub.record.rules import hub_id

router = APIRouter(prefix="/fhir", tags=["ingest"])
log = logging.getLogger(__name__)


JSON_TYPES = ("application/fhir+json", "application/json")


def media_type_problem(content_type: str | None) -> str | None:
    """Why a body of ``content_type`` is not FHIR JSON the hub reads; None if it is.

    FHIR JSON (or plain JSON), in UTF-8: a ``charset`` other than utf-8 would be misread,
    and a body sent as text/plain or a form was not meant as a resource. Other parameters
    (``fhirVersion``) are ignored.
    """
    if not content_type:
        return "no Content-Type: send application/fhir+json"
    mime, *params = (p.strip() for p in content_type.split(";"))
    if mime.lower() not in JSON_TYPES:
        return f"Content-Type {mime!r} is not FHIR JSON: send application/fhir+json"
    for param in params:
        name, _, value = param.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"').lower()
        if name == "charset" and value not in ("utf-8", "utf8"):
            return f"charset {value!r} is not accepted: send UTF-8 (charset=utf-8)"
    return None


async def read_body(ctx: HubContext, facility: Facility, request: Request
                    ) -> bytes | FhirResponse:
    """The request body; or a 415 OperationOutcome if it is not declared FHIR JSON, or a 413
    once it passes the configured limit.

    An oversized body is not kept (it would not fit the dead-letter topic either); its
    rejection is dead-lettered with an empty value so the refusal is still on record.
    """
    problem = media_type_problem(request.headers.get("content-type"))
    if problem is not None:
        # Refused unread (like an oversized body); the refusal is still on record.
        issue = Issue("(Content-Type)", problem, "not-supported")
        return await _reject(ctx, facility, request, 415, [issue], b"",
                             "unsupported-media-type")
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
        return await _reject(ctx, facility, request, 413, [issue], b"", "too-large")
    return b"".join(chunks)


def _letter(facility: Facility, request: Request, body: bytes, reason: str,
            issues: list[Issue], rtype: str | None = None, rid: str | None = None,
            resource: Any = None) -> DeadLetter:
    """``resource``: the body as parsed, where it was (what it says about itself is kept)."""
    about = about_resource(facility.id, resource, rtype, rid and local_id(facility, rid))
    headers = [("http_request", f"{request.method} {request.url.path}".encode())]
    if ctype := request.headers.get("content-type"):
        headers.append(("content-type", ctype.encode()))
    return refuse("gateway", reason, body, issues=issues, facility=facility.id,
                  headers=headers, **about)


async def _dead_letter(ctx: HubContext, letters: list[DeadLetter]) -> FhirResponse | None:
    """Keep refused inputs in SQL before anything is answered; a 503 if that failed.

    The answer waits for the SQL commit, not for the dead-letter topic: a broker outage
    does not stop refusals from being recorded and answered.
    """
    try:
        await ctx.deadletters.keep(letters)
    except StoreError as exc:
        DEADLETTERS_UNRECORDED.labels("gateway").inc(len(letters))
        log.error("%d refusal(s) could not be recorded (answered 503): %s", len(letters), exc)
        return error(503, "the input was refused, but the refusal could not be recorded; "
                     f"nothing was accepted, send it again later: {exc}", "transient")
    for letter in letters:
        EVENTS_REJECTED.labels("gateway", letter.reason).inc()
    return None


async def _reject(ctx: HubContext, facility: Facility, request: Request, status: int,
                  issues: list[Issue], body: bytes, reason: str, rtype: str | None = None,
                  rid: str | None = None, resource: Any = None) -> FhirResponse:
    """Dead-letter what was refused, then answer with the outcome."""
    letter = _letter(facility, request, body, reason, issues, rtype, rid, resource)
    return await _dead_letter(ctx, [letter]) or outcome_response(status, issues)


async def _append(ctx: HubContext, facility: Facility, envelopes: list[Envelope]
                  ) -> FhirResponse | None:
    try:
        await publish_acknowledged(ctx, envelopes)
    except NotAcknowledged as exc:
        log.warning("answered 503: %s", exc)
        return unavailable(f"not acknowledged: {exc}; send it again (a PUT replaces, "
                           "consumers drop duplicate event ids)")
    except BrokerError as exc:
        return unavailable(f"the event log is unavailable, nothing was accepted: {exc}")
    EVENTS_ACCEPTED.labels("gateway", facility.id).inc(len(envelopes))
    return None


def _created(facility: Facility, p: Prepared) -> dict[str, Any]:
    if p.kept is not None:  # a conditional create that found its resource already there
        rtype, _, rid = p.kept.partition("/")
        return {"status": "200 OK", "location": f"{rtype}/{hub_id(facility.id, rid)}"}
    assert p.envelope is not None and p.resource is not None
    location = f"{p.resource['resourceType']}/{hub_id(facility.id, p.resource['id'])}"
    meta = p.resource.get("meta") or {}
    return {"status": "201 Created", "location": location,
            "etag": f'W/"{meta.get("versionId", "1")}"',
            # The sender's lastUpdated, else when the hub accepted it (as the record shows)
            "lastModified": meta.get("lastUpdated") or p.envelope.time}


def _refusal_status(issues: list[Issue]) -> int:
    if any(i.location in ("resourceType", "(body)") for i in issues):
        return 400
    return 403 if any(i.code == "forbidden" for i in issues) else 422


async def _parsed(ctx: HubContext, facility: Facility, request: Request, body: bytes,
                  rtype: str, url_id: str | None
                  ) -> tuple[bytes, Any, Any] | FhirResponse:
    """(the body without a byte-order mark, parsed, parsed with numbers as written or None);
    or the refusal of a body that is no JSON, or names a type the hub does not take."""
    text = body.removeprefix(BOM)  # a byte-order mark is tolerated at the start
    resource, issues = parse_json(text)
    if issues:
        return await _reject(ctx, facility, request, 400, issues, body, "invalid-json",
                             rtype, url_id)
    if rtype not in ACCEPTED_TYPES:
        return await _reject(ctx, facility, request, 400, [not_accepted(rtype)], body,
                             "invalid-resource", rtype, url_id, resource)
    return text, resource, loads_exact(text) if needs_exact(text, resource) else None


async def _single(ctx: HubContext, facility: Facility, request: Request, body: bytes,
                  rtype: str, url_id: str | None) -> FhirResponse:
    parsed = await _parsed(ctx, facility, request, body, rtype, url_id)
    if isinstance(parsed, FhirResponse):
        return parsed
    text, resource, exact = parsed
    p = prepare_upsert(facility, resource, rtype, url_id=url_id, assign_id=url_id is None,
                       raw=text, members=ctx.directory, exact=exact)
    if not p.ok:
        # 400: not a resource of the type the URL names; 403: another member's resource;
        # 422: a resource breaking rules.
        status = _refusal_status(p.issues)
        reason = "foreign-id" if status == 403 else "invalid-resource"
        return await _reject(ctx, facility, request, status, p.issues, body, reason, rtype,
                             url_id, resource)
    return await _store_one(ctx, facility, p)


async def _store_one(ctx: HubContext, facility: Facility, p: Prepared) -> FhirResponse:
    """Append one accepted resource and answer 201 with it, or the outage's 503."""
    failed = await _append(ctx, facility, [p.envelope])
    if failed:
        return failed
    resp = _created(facility, p)
    return FhirResponse(p.resource, status_code=201,
                        headers={"Location": f"/fhir/{resp['location']}", "ETag": resp["etag"]})


def _entry_letter(facility: Facility, request: Request, entry: bytes, issues: list[Issue]
                  ) -> DeadLetter:
    parsed = orjson.loads(entry)  # the gateway serialised it: it parses
    resource = parsed.get("resource") if isinstance(parsed, dict) else None
    return _letter(facility, request, entry, "invalid-entry", issues, resource=resource)


@router.post("")
@router.post("/")
async def post_bundle(request: Request, ctx: ContextDep, facility: FacilityDep) -> FhirResponse:
    body = await read_body(ctx, facility, request)
    if isinstance(body, FhirResponse):
        return body
    resolutions = await _resolve(ctx, facility, body)
    planned = await ctx.checks.plan_body(facility, body, resolutions)
    if planned.issues:
        return await _reject(ctx, facility, request, 400, planned.issues, body,
                             planned.reason, "Bundle")
    plan = planned.plan
    assert plan is not None
    if plan.all_or_nothing and not all(p.ok for p in plan.entries):
        return await _reject(ctx, facility, request, 400, plan.all_issues(), body,
                             "invalid-transaction", "Bundle")
    # The refused entries are recorded before the valid ones are appended: if they cannot
    # be, nothing is accepted and the sender may simply send the Bundle again.
    refused = [_entry_letter(facility, request, planned.refused_entries[i], p.issues)
               for i, p in enumerate(plan.entries) if not p.ok]
    if refused and (failed := await _dead_letter(ctx, refused)):
        return failed
    good = [p for p in plan.entries if p.envelope is not None]
    failed = await _append(ctx, facility, [p.envelope for p in good])
    if failed:
        return failed
    out_entries = []
    for p in plan.entries:
        if p.ok:
            out_entries.append({"response": _created(facility, p)})
        else:
            status = ("403 Forbidden" if any(i.code == "forbidden" for i in p.issues)
                      else "400 Bad Request")
            out_entries.append({"response": {"status": status,
                                             "outcome": operation_outcome(p.issues)}})
    rtype = {"transaction": "transaction-response"}.get(plan.bundle_type, "batch-response")
    return FhirResponse({"resourceType": "Bundle", "type": rtype, "entry": out_entries})


async def _resolve(ctx: HubContext, facility: Facility, body: bytes
                   ) -> dict[int, Resolution]:
    """The shared record's answers to the conditions a Bundle's entries carry (conditional
    create and update, ifMatch); none to look up for most Bundles (one byte scan)."""
    if not CONDITIONAL.search(body):
        return {}
    try:
        bundle = orjson.loads(body.removeprefix(BOM))
        entries = bundle["entry"]
        asked = {i: entry_conditions(e) for i, e in enumerate(entries)}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}  # the planner refuses the body with the reason
    asked = {i: c for i, c in asked.items() if c}
    if not asked:
        return {}
    return await asyncio.to_thread(resolve_conditions, ctx.store, facility.id, asked)


# Where a single conditional request's refusal is located (the planner names the entry).
_HEADER_OF = {"Bundle.entry[0].request.ifMatch": "(If-Match)",
              "Bundle.entry[0].request.ifNoneExist": "(If-None-Exist)",
              "Bundle.entry[0].request.url": "(url)", "Bundle.entry[0].request": "(request)",
              "Bundle.entry[0]": "(request)"}
_PRECONDITION = ("conflict", "multiple-matches")


async def _conditional(ctx: HubContext, facility: Facility, request: Request, body: bytes,
                       rtype: str, asked: dict[str, str]) -> FhirResponse:
    """A single conditional create (If-None-Exist), conditional update (PUT Type?criteria)
    or versioned update (If-Match): planned as a one-entry transaction, so it follows the
    Bundle's rules exactly. 412 when the precondition fails."""
    parsed = await _parsed(ctx, facility, request, body, rtype, None)
    if isinstance(parsed, FhirResponse):
        return parsed
    text, resource, exact_resource = parsed
    entry = {"resource": resource, "request": asked}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    exact = None if exact_resource is None else {"entry": [{"resource": exact_resource}]}
    conditions = entry_conditions(entry)
    resolutions = ({0: (await asyncio.to_thread(resolve_conditions, ctx.store, facility.id,
                                                {0: conditions}))[0]} if conditions else {})
    p = plan_bundle(facility, bundle, text, ctx.directory, resolutions, exact).entries[0]
    if not p.ok:
        found = [Issue(_HEADER_OF.get(i.location, i.location), i.diagnostics, i.code)
                 for i in p.issues]
        status = 412 if any(i.code in _PRECONDITION for i in found) else \
            _refusal_status(found)
        reason = "foreign-id" if status == 403 else "invalid-resource"
        return await _reject(ctx, facility, request, status, found, body, reason, rtype,
                             None, resource)
    if p.kept is not None:  # conditional create: it is already there
        resp = _created(facility, p)
        return FhirResponse(operation_outcome([]), status_code=200,
                            headers={"Location": f"/fhir/{resp['location']}"})
    return await _store_one(ctx, facility, p)


async def _from_body(ctx: HubContext, facility: Facility, request: Request, rtype: str,
                     rid: str | None) -> FhirResponse:
    body = await read_body(ctx, facility, request)
    if isinstance(body, FhirResponse):
        return body
    if_none_exist = request.headers.get("if-none-exist")
    if_match = request.headers.get("if-match")
    if rid is None and request.method == "PUT":
        return await _conditional(ctx, facility, request, body, rtype, {
            "method": "PUT", "url": f"{rtype}?{request.url.query}"})
    if rid is None and if_none_exist is not None:
        return await _conditional(ctx, facility, request, body, rtype, {
            "method": "POST", "url": rtype, "ifNoneExist": if_none_exist})
    if rid is not None and if_match is not None:
        return await _conditional(ctx, facility, request, body, rtype, {
            "method": "PUT", "url": f"{rtype}/{rid}", "ifMatch": if_match})
    return await _single(ctx, facility, request, body, rtype, rid)


@router.post("/{rtype}")
async def create(rtype: str, request: Request, ctx: ContextDep, facility: FacilityDep
                 ) -> FhirResponse:
    return await _from_body(ctx, facility, request, rtype, None)


@router.put("/{rtype}")
async def conditional_update(rtype: str, request: Request, ctx: ContextDep,
                             facility: FacilityDep) -> FhirResponse:
    """``PUT /fhir/Patient?identifier=system|value``: update the one match, or create."""
    return await _from_body(ctx, facility, request, rtype, None)


@router.put("/{rtype}/{rid}")
async def update(rtype: str, rid: str, request: Request, ctx: ContextDep, facility: FacilityDep
                 ) -> FhirResponse:
    return await _from_body(ctx, facility, request, rtype, rid)


@router.delete("/{rtype}/{rid}")
async def delete(rtype: str, rid: str, ctx: ContextDep, facility: FacilityDep) -> FhirResponse:
    local = local_id(facility, rid)
    if foreign := foreign_id_issue(facility, rtype, local, ctx.directory):
        return outcome_response(403, [foreign])
    # A sync query on the event loop: one primary-key lookup, cheaper than a thread hop.
    live = live_version(ctx.store, rtype, hub_id(facility.id, local))
    if live is None:
        return error(404, f"{rtype}/{rid} is not in the shared record for {facility.id}",
                     "not-found")
    # The deletion names the version it deletes, so it sorts after it (record.rules).
    env = prepare_delete(facility, rtype, local, *live)
    failed = await _append(ctx, facility, [env])
    return failed or FhirResponse(operation_outcome([]), status_code=200)
