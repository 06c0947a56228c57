"""The reading centre's side: worklist, claims, turnaround; and a patient's imaging history.

Studies, reading requests and reports are published like any resource (gateway or SDK);
these endpoints read the ``imaging`` projection, and a claim is published as a Task event
and settled by log order, so exactly one of two competing readers gets the study.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Query

from hub import clock
from hub.access.rules import Principal, may_read_patient, readable_facilities
from hub.api.consent_check import consented, refused_by_consent, withheld_links
from hub.api.deps import ContextDep, HubContext, ImagingReaderDep
from hub.api.guard import audit
from hub.api.outcome import FhirResponse, error
from hub.api.publish import applied_by, publish_acknowledged
from hub.envelope import new_event, now_rfc3339
from hub.fhir import validate
from hub.imaging import read as img
from hub.imaging import rules
from hub.mpi.service import linked_records
from hub.registry.model import FacilityRecord
from hub.signing import hub_signer

router = APIRouter(prefix="/imaging", tags=["imaging and ECG"])
SERVICES = ("imaging", "ecg", "pathology")


def _registry(ctx: HubContext) -> dict[str, FacilityRecord]:
    return {f.id: f.record for f in ctx.directory}


def _facility_only(reader: Principal) -> FhirResponse | None:
    if reader.kind != "facility":
        return error(403, "the reading worklist is for member facilities' readers",
                     "forbidden")
    return None


@router.get("/worklist")
def worklist(ctx: ContextDep, reader: ImagingReaderDep,
             service: Annotated[str | None, Query(description="imaging, ecg or pathology")
                                ] = None,
             centre: Annotated[str | None, Query(
                 description="Reading centre; default: the caller")] = None) -> FhirResponse:
    """Studies waiting for a report at a reading centre: priority, then arrival; claims and
    SLA breaches shown."""
    if (refused := _facility_only(reader)) is not None:
        return refused
    if service is not None and service not in SERVICES:
        return error(400, f"service must be one of {', '.join(SERVICES)}", "value")
    centre = centre or reader.id
    items = consented(ctx, reader, img.worklist(ctx.store, _registry(ctx), centre,
                                                (service,) if service else SERVICES),
                      lambda i: (i["patient_key"],))
    audit(ctx, reader, "search-type", f"imaging/worklist?centre={centre}",
          {i["patient_key"] for i in items})
    return FhirResponse({"centre": centre, "count": len(items), "studies": items})


@router.post("/studies/{study_id}/claim")
async def claim(study_id: str, ctx: ContextDep, reader: ImagingReaderDep,
                who: Annotated[str, Body(embed=True, alias="reader",
                                         description="The reading doctor")],
                minutes: Annotated[float | None, Body(embed=True, gt=0, le=24 * 60)] = None
                ) -> FhirResponse:
    """Claim a study for reading. 200 with the claim if it is yours, 409 naming the holder
    if another reader holds it; a claim lapses after ``minutes``."""
    if (refused := _facility_only(reader)) is not None:
        return refused
    found = await asyncio.to_thread(img.study, ctx.store, study_id)
    if found is None:
        return error(404, f"no study {study_id}", "not-found")
    registry = _registry(ctx)
    origin = registry.get(found["facility"])
    centre = origin.reading_centre(found["service"]) if origin else None
    if centre != reader.id:
        return error(403, f"{study_id} ({found['service']}) is read at {centre or 'no centre'}"
                     f", not at {reader.id}", "forbidden")
    # Reading a study is reading the patient: a consent keeping this centre out refuses it.
    if refused := await asyncio.to_thread(refused_by_consent, ctx, reader, found["patient_key"],
                                          "operation", f"imaging/studies/{study_id}/claim"):
        return refused
    lasting = minutes or ctx.settings.imaging_claim_minutes
    now = clock.now()
    task_id = f"claim-{uuid.uuid4().hex[:20]}"
    task = {"resourceType": "Task", "id": task_id, "status": "in-progress",
            "intent": "order",
            "code": {"coding": [{"system": rules.CLAIM_SYSTEM, "code": rules.CLAIM_CODE}]},
            "focus": {"reference": f"ImagingStudy/{study_id}"},
            "owner": {"display": who}, "authoredOn": now_rfc3339(),
            "restriction": {"period": {"end": (now + timedelta(minutes=lasting)).isoformat()}}}
    issues = validate(task, "Task")
    if issues:
        return error(400, issues[0].diagnostics, "invalid")
    # Keyed like the study: every claim on one study lands in one partition, in order.
    env = hub_signer().sign(new_event(reader.id, "Task", task_id, found["patient_key"],
                                      orjson.dumps(task)))
    await publish_acknowledged(ctx, [env])
    if not await applied_by(ctx, "imaging", env.id):
        return error(503, "the claim was published but the imaging projection has not "
                     "applied it yet; ask again for the worklist", "transient")
    holder = await asyncio.to_thread(img.claim, ctx.store, study_id)
    mine = holder is not None and holder["task_id"] == f"{reader.id}.{task_id}"
    body = {"study": study_id, "won": mine, "claim": holder}
    return FhirResponse(body, status_code=200 if mine else 409)


@router.get("/unmatched-reports")
def unmatched(ctx: ContextDep, reader: ImagingReaderDep) -> FhirResponse:
    """Reports the caller's centre sent for studies the hub has not received (a wrong or
    early reference): kept, listed until the study arrives."""
    if (refused := _facility_only(reader)) is not None:
        return refused
    return FhirResponse({"reports": img.unmatched_reports(ctx.store, reader.id)})


@router.get("/turnaround")
def turnaround(ctx: ContextDep, reader: ImagingReaderDep,
               by: Annotated[str, Query(description="centre, facility or modality")
                             ] = "centre",
               since: Annotated[str | None, Query(description="RFC 3339")] = None
               ) -> FhirResponse:
    """Acquisition -> report turnaround, p50/p90 minutes per group and day."""
    if by not in ("centre", "facility", "modality"):
        return error(400, "by must be centre, facility or modality", "value")
    if since is not None:
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            return error(400, f"since: {since!r} is not an RFC 3339 time", "value")
    return FhirResponse({"by": by, "rows": img.turnaround(ctx.store, by, since)})


@router.get("/history")
def history(ctx: ContextDep, reader: ImagingReaderDep,
            patient: Annotated[str, Query(description="Patient/<facility>.<id>")]
            ) -> FhirResponse:
    """A patient's studies at every facility, each with its report and earlier versions."""
    key = patient.rstrip("/").split("/")[-1]
    if not may_read_patient(reader, key):
        audit(ctx, reader, "search-type", f"imaging/history?patient={key}", {key}, "4")
        return error(403, f"{reader.kind} {reader.id} may not read patients of "
                     f"{key.partition('.')[0]}", "forbidden")
    what = f"imaging/history?patient={key}"
    withheld = withheld_links(ctx, reader, key)
    if refused := refused_by_consent(ctx, reader, key, "search-type", what, withheld=withheld):
        return refused
    allowed = readable_facilities(reader)
    # The reader's own record of the resident, without the linked records elsewhere that a
    # consent keeps it out of.
    keys = [k for k in linked_records(ctx.store, key)
            if (allowed is None or k.partition(".")[0] in allowed) and k not in withheld]
    studies = img.history(ctx.store, keys)
    audit(ctx, reader, "search-type", what, set(keys))
    return FhirResponse({"patient": f"Patient/{key}", "studies": studies})
