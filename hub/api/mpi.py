"""The patient index over HTTP: the review queue, and the decisions people make.

Member facilities only (apps read, they do not decide identities). Every decision becomes
Person / Task events on the log, and is applied by the time the answer is sent.
"""

from __future__ import annotations

from typing import Annotated

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Body, Query

from hub.access.rules import Principal
from hub.api.consent_check import consented, refused_by_consent, withheld_links
from hub.api.deps import ContextDep, HubContext, MpiReaderDep
from hub.api.guard import audit
from hub.api.outcome import FhirResponse, error
from hub.mpi.ledger import review_of
from hub.mpi.projection import REVIEWS, MpiProjection
from hub.mpi.service import MpiError, MpiService, NotLeader, linked_records

router = APIRouter(prefix="/mpi", tags=["patient index"])
_REVIEWS = MpiProjection().tables(sa.MetaData())[REVIEWS]
STATUSES = ("requested", "completed", "rejected")


def _refuse(reader: Principal) -> FhirResponse | None:
    if reader.kind != "facility":
        return error(403, f"{reader.kind} {reader.id} may not use the patient index; a member "
                     "facility's token is needed", "forbidden")
    return None


def _service(ctx: HubContext) -> MpiService | FhirResponse:
    if ctx.mpi is None:
        return error(503, "the patient index runs where the projections run; this hub process "
                     "was started without them", "transient")
    return ctx.mpi


def _review_json(task: dict) -> dict:
    r = review_of(task)
    return {"id": r.id, "kind": r.kind, "status": r.status, "record": r.record,
            "candidate_person": r.candidate_person, "candidate_record": r.candidate_record,
            "score": r.score, "reasons": list(r.reasons), "decided_by": r.decided_by}


@router.get("/reviews")
def reviews(ctx: ContextDep, reader: MpiReaderDep,
            status: Annotated[str, Query(description="requested, completed or rejected")
                              ] = "requested",
            count: Annotated[int, Query(alias="_count", ge=1, le=500)] = 100) -> FhirResponse:
    """The review queue: grey-zone matches and identity conflicts awaiting a person."""
    if (refused := _refuse(reader)) is not None:
        return refused
    if status not in STATUSES:
        return error(400, f"status must be one of {', '.join(STATUSES)}", "value")
    with ctx.store.connect() as conn:
        rows = conn.execute(sa.select(_REVIEWS.c.body).where(_REVIEWS.c.status == status)
                            .order_by(_REVIEWS.c.seq).limit(count)).scalars().all()
    # A review names both records: one a consent keeps the reader out of is not listed.
    items = consented(ctx, reader, [_review_json(orjson.loads(b)) for b in rows],
                      lambda i: (i["record"], i["candidate_record"]))
    audit(ctx, reader, "search-type", f"mpi/reviews?status={status}",
          {i["record"] for i in items} | {i["candidate_record"] for i in items})
    return FhirResponse({"reviews": items})


async def _decide(ctx: HubContext, reader: Principal, call) -> FhirResponse:
    if (refused := _refuse(reader)) is not None:
        return refused
    service = _service(ctx)
    if isinstance(service, FhirResponse):
        return service
    try:
        result = await call(service, f"facility:{reader.id}")
    except MpiError as exc:
        return error(409, str(exc), "conflict")
    except NotLeader as exc:
        return error(503, str(exc), "transient")
    return FhirResponse(result)


@router.post("/reviews/{review_id}/confirm")
async def confirm(review_id: str, ctx: ContextDep, reader: MpiReaderDep) -> FhirResponse:
    """Same resident: link the record to the candidate person."""
    return await _decide(ctx, reader, lambda s, by: s.close_review(review_id, True, by))


@router.post("/reviews/{review_id}/reject")
async def reject(review_id: str, ctx: ContextDep, reader: MpiReaderDep) -> FhirResponse:
    """Different residents: keep them apart (the review is closed)."""
    return await _decide(ctx, reader, lambda s, by: s.close_review(review_id, False, by))


@router.post("/unlink")
async def unlink(ctx: ContextDep, reader: MpiReaderDep,
                 record: Annotated[str, Body(embed=True)]) -> FhirResponse:
    """Take a facility record out of its person: it becomes a person of its own again."""
    return await _decide(ctx, reader, lambda s, by: s.unlink(record, by))


@router.post("/merge")
async def merge(ctx: ContextDep, reader: MpiReaderDep,
                survivor: Annotated[str, Body(embed=True)],
                merged: Annotated[str, Body(embed=True)]) -> FhirResponse:
    """Merge the person of record ``merged`` into the person of record ``survivor``."""
    return await _decide(ctx, reader, lambda s, by: s.merge(survivor, merged, by))


@router.get("/records/{record_key}")
def person_of(record_key: str, ctx: ContextDep, reader: MpiReaderDep) -> FhirResponse:
    """The consortium person a facility record belongs to, and all its records."""
    if (refused := _refuse(reader)) is not None:
        return refused
    what = f"mpi/records/{record_key}"
    withheld = withheld_links(ctx, reader, record_key)
    if refused := refused_by_consent(ctx, reader, record_key, "read", what, withheld=withheld):
        return refused
    # The reader's own record stays; where else the resident is known, a consent may hide.
    records = [k for k in linked_records(ctx.store, record_key) if k not in withheld]
    audit(ctx, reader, "read", what, set(records))
    return FhirResponse({"record": record_key, "records": records})
