"""Two-way referral: worklists, one referral, its record package, loop-closure figures, and
the steps (accept, reject, arrive, complete, cancel) a facility takes on a referral.

Referrals and their Tasks may also be published like any resource (gateway or SDK); the
step endpoints here build the Task, publish it keyed by the referral's patient and answer
once the referral projection has applied it: 200 if the state machine took the step, 409
with the reason if not (of two clinicians accepting at once, the second in the log).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request

from hub import clock
from hub.access.rules import Principal, may_read_patient, readable_facilities
from hub.api.consent_check import refused_by_consent, withheld_links
from hub.api.deps import ContextDep, HubContext, ReferralReaderDep
from hub.api.guard import audit, forbidden
from hub.api.outcome import FhirResponse, error
from hub.api.publish import applied_by, publish_acknowledged
from hub.api.recognition import catalogue_of
from hub.envelope import now_rfc3339
from hub.ingest.prepare import prepare_upsert
from hub.mpi.service import linked_records
from hub.referral import package as pkg
from hub.referral import read as ref_read
from hub.referral import rules
from hub.registry.model import FacilityRecord

router = APIRouter(prefix="/referrals", tags=["two-way referral"])
ACTIONS = {"accept": rules.ACCEPTED, "reject": rules.REJECTED, "arrive": rules.IN_PROGRESS,
           "complete": rules.COMPLETED, "cancel": rules.CANCELLED}
STATES = (*sorted(rules.OPEN), *sorted(rules.FINAL))


def _registry(ctx: HubContext) -> dict[str, FacilityRecord]:
    return {f.id: f.record for f in ctx.directory}


def _policy(ctx: HubContext) -> rules.Policy:
    return ref_read.referral_policy(ctx.settings)


def _facility_only(reader: Principal) -> FhirResponse | None:
    if reader.kind != "facility":
        return forbidden("referral worklists and steps are for member facilities")
    return None


def _states(state: str | None) -> frozenset[str] | FhirResponse:
    if state is None:
        return rules.OPEN
    wanted = frozenset(s.strip() for s in state.split(",") if s.strip())
    if not wanted or wanted - set(STATES):
        return error(400, f"state must be one or more of {', '.join(STATES)}", "value")
    return wanted


def _worklist(ctx: HubContext, reader: Principal, side: str, facility: str | None,
              state: str | None) -> FhirResponse:
    if (refused := _facility_only(reader)) is not None:
        return refused
    states = _states(state)
    if isinstance(states, FhirResponse):
        return states
    facility = facility or reader.id
    if side == "incoming":
        items = ref_read.incoming(ctx.store, _registry(ctx), _policy(ctx), facility, states)
    else:
        items = ref_read.outgoing(ctx.store, _registry(ctx), _policy(ctx), facility, states)
    audit(ctx, reader, "search-type", f"referrals/{side}?facility={facility}",
          {f.request.patient_key for f in items})
    return FhirResponse({"facility": facility, "side": side, "count": len(items),
                         "referrals": [f.summary() for f in items]})


@router.get("/incoming")
def incoming(ctx: ContextDep, reader: ReferralReaderDep,
             facility: Annotated[str | None, Query(description="Default: the caller")] = None,
             state: Annotated[str | None, Query(
                 description="Comma-separated states; default the open ones")] = None
             ) -> FhirResponse:
    """Referrals a facility may accept or holds: priority (stat first), then arrival, each
    with its acceptance SLA due time and breach flag."""
    return _worklist(ctx, reader, "incoming", facility, state)


@router.get("/outgoing")
def outgoing(ctx: ContextDep, reader: ReferralReaderDep,
             facility: Annotated[str | None, Query(description="Default: the caller")] = None,
             state: Annotated[str | None, Query(
                 description="Comma-separated states; default every state")] = None
             ) -> FhirResponse:
    """Referrals a facility sent, in every state unless ``state`` says otherwise."""
    if state is None:
        state = ",".join(STATES)
    return _worklist(ctx, reader, "outgoing", facility, state)


@router.get("/statistics")
def statistics(ctx: ContextDep, reader: ReferralReaderDep,
               month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$",
                                                  description="Consortium month, 2026-11")
                                ] = None) -> FhirResponse:
    """Loop closure per sending tier and month: up-referrals, share closed by a
    down-referral, median minutes to acceptance, rejections by reason, SLA breaches."""
    return FhirResponse({"rows": ref_read.statistics(ctx.store, _registry(ctx), _policy(ctx),
                                                     month)})


def _found(ctx: HubContext, reader: Principal, referral_id: str, what: str
           ) -> ref_read.Folded | FhirResponse:
    folded = ref_read.one(ctx.store, _registry(ctx), _policy(ctx), referral_id)
    if folded is None:
        return error(404, f"no referral {referral_id}", "not-found")
    key = folded.request.patient_key
    if not may_read_patient(reader, key):
        audit(ctx, reader, "read", what, {key}, "4")
        return forbidden(f"{reader.kind} {reader.id} may not read patients of "
                         f"{key.partition('.')[0]}")
    return folded


@router.get("/{referral_id}")
def one(referral_id: str, ctx: ContextDep, reader: ReferralReaderDep) -> FhirResponse:
    """One referral: its request, state, receivers, SLA and every step (refused ones with
    the reason)."""
    found = _found(ctx, reader, referral_id, f"ServiceRequest/{referral_id}")
    if isinstance(found, FhirResponse):
        return found
    audit(ctx, reader, "read", f"ServiceRequest/{referral_id}", {found.request.patient_key})
    return FhirResponse(found.detail())


@router.get("/{referral_id}/package")
def package(referral_id: str, request: Request, ctx: ContextDep, reader: ReferralReaderDep,
            as_: Annotated[str, Query(alias="format", pattern="^(json|bundle)$",
                                      description="json, or bundle for a FHIR Bundle")
                           ] = "json"
            ) -> FhirResponse:
    """What the receiving facility needs, across every linked record of the patient: lab
    results with their recognition status, imaging with reports, active medication and
    problems, the referral's evidence. For the sender, and for the receiver once it has
    accepted."""
    what = f"referrals/{referral_id}/package"
    found = _found(ctx, reader, referral_id, what)
    if isinstance(found, FhirResponse):
        return found
    ref, key = found.referral, found.request.patient_key
    receiving = ref.holder == reader.id and ref.state in (
        rules.ACCEPTED, rules.IN_PROGRESS, rules.COMPLETED)
    if reader.kind == "facility" and reader.id != found.request.sender and not receiving:
        audit(ctx, reader, "read", what, {key}, "4")
        return forbidden(f"the package of {referral_id} is for {found.request.sender} and "
                         f"for the facility that accepted it (it is {ref.state})")
    withheld = withheld_links(ctx, reader, key)
    if refused := refused_by_consent(ctx, reader, key, "read", what, withheld=withheld):
        return refused
    allowed = readable_facilities(reader)
    # Without the linked records elsewhere that a consent keeps the reader out of.
    keys = [k for k in linked_records(ctx.store, key)
            if (allowed is None or k.partition(".")[0] in allowed) and k not in withheld]
    body = pkg.assemble(ctx.store, _registry(ctx), catalogue_of(ctx), found, keys,
                        clock.today())
    audit(ctx, reader, "read", what, set(keys))
    if as_ == "bundle":
        return FhirResponse(pkg.bundle(ctx.store, body, str(request.base_url).rstrip("/")))
    return FhirResponse(body)


@router.post("/{referral_id}/{action}")
async def step(referral_id: str, action: str, ctx: ContextDep, reader: ReferralReaderDep,
               clinician: Annotated[str | None, Body(embed=True, max_length=200,
                                                     description="Who takes the step")] = None,
               reason: Annotated[str | None, Body(embed=True, max_length=500, description=(
                   "Rejection reason code (" + ", ".join(rules.REJECTION_REASONS) +
                   ") or a text; required to reject"))] = None) -> FhirResponse:
    """Take a step on a referral (accept, reject, arrive, complete, cancel) as the calling
    facility: 200 with the referral if the state machine took it, 409 with the reason if
    not (already accepted by another clinician, wrong state, wrong party)."""
    if (refused := _facility_only(reader)) is not None:
        return refused
    to = ACTIONS.get(action)
    if to is None:
        return error(404, f"unknown step {action!r}; one of {', '.join(ACTIONS)}", "not-found")
    facility = ctx.directory.get(reader.id)
    if facility is None:
        return forbidden(f"{reader.id} is not a member facility")
    if to == rules.REJECTED and not reason:
        return error(422, "a rejection needs a reason: " + ", ".join(rules.REJECTION_REASONS),
                     "required")
    found = await asyncio.to_thread(ref_read.one, ctx.store, _registry(ctx), _policy(ctx),
                                    referral_id)
    if found is None:
        return error(404, f"no referral {referral_id}", "not-found")
    parties = {found.request.sender, found.referral.holder, *found.receivers}
    if reader.id not in parties:
        return forbidden(f"{reader.id} is neither the sender nor a receiver of {referral_id}")
    task = _task(found.request, to, clinician, reason)
    prepared = prepare_upsert(facility, task, "Task", members=ctx.directory)
    if not prepared.ok:
        return error(422, prepared.issues[0].diagnostics, "invalid")
    env = prepared.envelope
    await publish_acknowledged(ctx, [env])
    if not await applied_by(ctx, "referral", env.id):
        return error(503, "the step was published but the referral projection has not "
                     "applied it yet; ask for the referral again", "transient")
    after = await asyncio.to_thread(ref_read.one, ctx.store, _registry(ctx), _policy(ctx),
                                    referral_id)
    assert after is not None
    mine = next(h for h in after.referral.history if h["event"] == env.id)
    body = {**after.detail(), "step": mine}
    return FhirResponse(body, status_code=200 if mine["applied"] else 409)


def _task(req: rules.Request, to: str, clinician: str | None, reason: str | None) -> dict:
    ref = {"reference": f"ServiceRequest/{req.id}"}
    task: dict = {
        "resourceType": "Task", "id": f"ref-{uuid.uuid4().hex[:20]}", "status": to,
        "intent": "order", "authoredOn": now_rfc3339(),
        "code": {"coding": [{"system": rules.TASK_CODE[0], "code": rules.TASK_CODE[1]}]},
        "focus": ref, "basedOn": [ref], "for": {"reference": f"Patient/{req.patient_key}"}}
    if clinician:
        task["owner"] = {"display": clinician}
    if reason:
        task["statusReason"] = (
            {"coding": [{"system": rules.REJECTION_SYSTEM, "code": reason,
                         "display": rules.REJECTION_REASONS[reason]}]}
            if reason in rules.REJECTION_REASONS else {"text": reason})
    return task
