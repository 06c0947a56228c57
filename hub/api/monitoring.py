"""Remote monitoring over HTTP: home readings in, the family-doctor team's worklist, and what
the team does about an alert (acknowledge, resolve, refer up), each published as an event.

Readings: ``POST /devices/{id}/readings`` with the device facility's token (a meter that
speaks HTTP rather than MQTT; same intake, same refusals). Actions are Task events published
in the name of the caller's facility and answered once the monitoring projection shows
them, so a rebuild from the log reproduces every worklist state.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Query, Request

from hub.access.rules import Principal, may_read_patient
from hub.api.consent_check import consented, refused_by_consent
from hub.api.deps import ContextDep, FacilityDep, HubContext, MonitoringReaderDep
from hub.api.guard import audit
from hub.api.outcome import RETRY_AFTER, FhirResponse, error, unavailable
from hub.api.publish import applied_by, publish_acknowledged
from hub.envelope import Envelope, new_event, now_rfc3339
from hub.fhir import validate
from hub.monitoring import read
from hub.monitoring.service import action_task, thresholds
from hub.signing import hub_signer

router = APIRouter(tags=["remote monitoring"])
STATUSES = ("open", "acknowledged", "resolved")
PRIORITIES = ("routine", "urgent", "asap", "stat")
# HTTP status per refusal reason of the device intake.
REFUSED_STATUS = {"unknown-device": 404, "unbound-device": 409, "bad-reading": 400,
                  "implausible-value": 422, "invalid-resource": 422,
                  "duplicate-reading": 409}
REFERRAL_CATEGORY = {"system": "http://snomed.info/sct", "code": "3457005",
                     "display": "Patient referral"}


def _facility_only(who: Principal) -> FhirResponse | None:
    if who.kind != "facility":
        return error(403, "team worklists and actions are for member facilities", "forbidden")
    return None


@router.post("/devices/{device_id}/readings", status_code=201)
async def reading(device_id: str, request: Request, ctx: ContextDep,
                  facility: FacilityDep) -> FhirResponse:
    """One reading of a home meter (JSON: ``time`` and ``systolic``/``diastolic``, or
    ``glucose`` with ``unit`` and ``fasting``). 201 once durably accepted; refusals are
    dead-lettered with their reason."""
    device = ctx.care.device(device_id)
    if device is not None and device.facility != facility.id:
        return error(403, f"device {device_id} belongs to {device.facility}, not to "
                     f"{facility.id}", "forbidden")
    assert ctx.devices is not None
    raw = await request.body()
    if len(raw) > 64 * 1024:
        return error(413, "a reading is at most 64 KiB", "too-costly")
    outcome = await ctx.devices.handle(device_id, raw, "http")
    if outcome.status == "unavailable":
        return unavailable(f"the reading was not acknowledged: {outcome.detail}")
    if outcome.status == "refused":
        return error(REFUSED_STATUS.get(outcome.reason, 422),
                     f"{outcome.reason}: {outcome.detail}",
                     "duplicate" if outcome.reason == "duplicate-reading" else "invalid")
    return FhirResponse({"observation": outcome.observation, "event": outcome.event_id},
                        status_code=201)


@router.get("/monitoring/worklist")
def worklist(ctx: ContextDep, reader: MonitoringReaderDep,
             team: Annotated[str | None, Query(description="A team of the caller; default: "
                                               "all its teams")] = None,
             status: Annotated[str | None, Query(description="open, acknowledged, resolved "
                                                 "(comma-separated); default open,"
                                                 "acknowledged")] = None,
             escalated: Annotated[bool, Query(description="The alerts escalated to the "
                                              "caller (a specialist facility)")] = False
             ) -> FhirResponse:
    """A family-doctor team's alerts: open first, critical first, oldest first, each with
    the readings it relied on, its SLA due time and a ``breached`` flag."""
    if (refused := _facility_only(reader)) is not None:
        return refused
    wanted = tuple((status or "open,acknowledged").split(","))
    if bad := [s for s in wanted if s not in STATUSES]:
        return error(400, f"status {bad[0]!r}: one of {', '.join(STATUSES)}", "value")
    sla = ctx.settings.monitoring.sla_hours
    if escalated:
        items = read.worklist(ctx.store, sla, escalated_to=reader.id, statuses=wanted)
        scope = f"escalated to {reader.id}"
    else:
        own = read.teams_of(ctx.store, reader.id)
        if team is not None and team not in own:
            return error(403, f"team {team} is not a team of {reader.id} (its teams: "
                         f"{', '.join(own) or 'none'})", "forbidden")
        teams = [team] if team else own
        items = read.worklist(ctx.store, sla, teams=teams, statuses=wanted)
        scope = ",".join(teams)
    # An escalated alert names a patient of another facility, whose consent may keep the
    # specialist out; a team's own patients are its facility's records.
    items = consented(ctx, reader, items, lambda i: (i["patient_key"],))
    audit(ctx, reader, "search-type", f"monitoring/worklist?{scope}",
          {i["patient_key"] for i in items})
    return FhirResponse({"facility": reader.id, "teams": scope, "count": len(items),
                         "alerts": items})


@router.get("/monitoring/patients/{patient}")
def patient(patient: str, ctx: ContextDep, reader: MonitoringReaderDep) -> FhirResponse:
    """A resident's enrolment, devices, newest readings, control status now, and alerts."""
    key = patient.removeprefix("Patient/")
    if not may_read_patient(reader, key):
        audit(ctx, reader, "read", f"monitoring/patients/{key}", {key}, "4")
        return error(403, f"{reader.kind} {reader.id} may not read patients of "
                     f"{key.partition('.')[0]}", "forbidden")
    if refused := refused_by_consent(ctx, reader, key, "read", f"monitoring/patients/{key}"):
        return refused
    body = read.patient_status(ctx.store, key, thresholds(ctx.settings.monitoring),
                               ctx.settings.monitoring.sla_hours)
    audit(ctx, reader, "read", f"monitoring/patients/{key}", {key})
    return FhirResponse(body)


async def _alert_for(ctx: HubContext, who: Principal, alert_id: str, may: str
                     ) -> tuple[dict | None, FhirResponse | None]:
    if (refused := _facility_only(who)) is not None:
        return None, refused
    found = await asyncio.to_thread(read.alert, ctx.store, alert_id,
                                    ctx.settings.monitoring.sla_hours)
    if found is None:
        return None, error(404, f"no alert {alert_id}", "not-found")
    allowed = {found["team_facility"]} | ({found["escalated_to"]} if may == "act" else set())
    if who.id not in allowed:
        return None, error(403, f"alert {alert_id} belongs to team {found['team']} of "
                           f"{found['team_facility']}", "forbidden")
    # The answer is the alert with its readings: a consent keeping the caller out refuses it.
    if refused := await asyncio.to_thread(refused_by_consent, ctx, who, found["patient_key"],
                                          "update", f"monitoring/alerts/{alert_id}/{may}"):
        return None, refused
    return found, None


def _event(facility: str, resource: dict, patient_key: str) -> Envelope:
    # Keyed by the patient: the alert and everything done about it keep their order.
    return hub_signer().sign(new_event(facility, resource["resourceType"], resource["id"],
                                       patient_key, orjson.dumps(resource)))


async def _act(ctx: HubContext, who: Principal, alert_id: str, action: str, by: str,
               note: str | None) -> FhirResponse:
    found, refused = await _alert_for(ctx, who, alert_id, "act")
    if refused is not None:
        return refused
    assert found is not None
    task = action_task(f"{action}-{uuid.uuid4().hex[:20]}", action, alert_id,
                       found["patient_key"], owner={"display": by}, reason=note)
    if issues := validate(task, "Task"):
        return error(400, issues[0].diagnostics, "invalid")
    env = _event(who.id, task, found["patient_key"])
    await publish_acknowledged(ctx, [env])
    if not await applied_by(ctx, "monitoring", env.id):
        return error(503, f"the {action} was recorded but the worklist has not shown it yet; "
                     "read the alert again", "transient", headers=RETRY_AFTER)
    return FhirResponse(await asyncio.to_thread(read.alert, ctx.store, alert_id,
                                                ctx.settings.monitoring.sla_hours))


@router.post("/monitoring/alerts/{alert_id}/acknowledge")
async def acknowledge(alert_id: str, ctx: ContextDep, who: MonitoringReaderDep,
                      by: Annotated[str, Body(embed=True, min_length=1, max_length=200,
                                              description="Who in the team")],
                      note: Annotated[str | None, Body(embed=True, max_length=2000)] = None
                      ) -> FhirResponse:
    """The team has seen the alert (stops the SLA escalation)."""
    return await _act(ctx, who, alert_id, "acknowledge", by, note)


@router.post("/monitoring/alerts/{alert_id}/resolve")
async def resolve(alert_id: str, ctx: ContextDep, who: MonitoringReaderDep,
                  by: Annotated[str, Body(embed=True, min_length=1, max_length=200)],
                  note: Annotated[str | None, Body(embed=True, max_length=2000)] = None
                  ) -> FhirResponse:
    """The alert is dealt with; it leaves the worklist (a resolved alert never reopens)."""
    return await _act(ctx, who, alert_id, "resolve", by, note)


@router.post("/monitoring/alerts/{alert_id}/refer", status_code=201)
async def refer(alert_id: str, ctx: ContextDep, who: MonitoringReaderDep,
                by: Annotated[str, Body(embed=True, min_length=1, max_length=200)],
                priority: Annotated[str, Body(embed=True)] = "urgent",
                reason: Annotated[str | None, Body(embed=True, max_length=2000)] = None
                ) -> FhirResponse:
    """Turn the alert into an up-referral to the team's specialist facility, in one call:
    a referral ServiceRequest (with the alert and its readings as evidence) and its Task
    (``requested``), plus the alert's own ``refer`` action, published together."""
    found, refused = await _alert_for(ctx, who, alert_id, "refer")
    if refused is not None:
        return refused
    assert found is not None
    if priority not in PRIORITIES:
        return error(400, f"priority must be one of {', '.join(PRIORITIES)}", "value")
    if found["referral"]:
        return error(409, f"alert {alert_id} was already referred as {found['referral']}",
                     "duplicate")
    sender, receiver, key = who.id, found["specialist"], found["patient_key"]
    if not receiver:
        return error(409, f"team {found['team']} names no specialist facility", "invalid")
    n = uuid.uuid4().hex[:16]
    request_id, task_id = f"ref-{n}", f"ref-task-{n}"
    words = reason or found["reason"]
    patient_ref = {"reference": f"Patient/{key}"}
    evidence = [{"reference": f"DetectedIssue/hub.{alert_id}"}] + [
        {"reference": r} for r in found["readings"]]
    service_request = {
        "resourceType": "ServiceRequest", "id": request_id, "status": "active",
        "intent": "order", "priority": priority,
        "category": [{"coding": [REFERRAL_CATEGORY]}],
        "code": {"text": f"remote monitoring: {found['kind']}"},
        "subject": patient_ref, "authoredOn": now_rfc3339(),
        "requester": {"reference": f"Organization/{sender}"},
        "performer": [{"reference": f"Organization/{receiver}"}],
        "reasonCode": [{"text": words}], "supportingInfo": evidence}
    task = {"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order",
            "priority": priority, "focus": {"reference": f"ServiceRequest/{request_id}"},
            "for": patient_ref, "authoredOn": now_rfc3339(),
            "requester": {"reference": f"Organization/{sender}"},
            "owner": {"reference": f"Organization/{receiver}"},
            "reasonCode": {"text": words}}
    action = action_task(f"refer-{n}", "refer", alert_id, key, reason=words,
                         owner={"reference": f"Organization/{receiver}", "display": by},
                         inputs=[("referral", f"ServiceRequest/{sender}.{request_id}"),
                                 ("referral-task", f"Task/{sender}.{task_id}")])
    for res in (service_request, task, action):
        if issues := validate(res, res["resourceType"]):
            return error(400, f"{res['resourceType']}: {issues[0].diagnostics}", "invalid")
    envs = [_event(sender, res, key) for res in (service_request, task, action)]
    await publish_acknowledged(ctx, envs)
    if not await applied_by(ctx, "monitoring", envs[-1].id):
        return error(503, "the referral was recorded but the worklist has not shown it yet; "
                     "read the alert again", "transient", headers=RETRY_AFTER)
    return FhirResponse({"alert": alert_id,
                         "service_request": f"ServiceRequest/{sender}.{request_id}",
                         "task": f"Task/{sender}.{task_id}", "to": receiver,
                         "priority": priority}, status_code=201)
