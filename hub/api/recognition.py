"""``POST /recognition/$check``: which ordered items a prior result can stand in for."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body

from hub.access.rules import may_read_patient, readable_facilities
from hub.api.deps import ContextDep, ReaderDep
from hub.api.outcome import FhirResponse, error
from hub.mpi.service import linked_records
from hub.recognition import read as rec_read
from hub.recognition.catalogue import load_catalogue
from hub.recognition.rules import CONSORTIUM_TZ, check

router = APIRouter(prefix="/recognition", tags=["mutual test recognition"])


@router.post("/$check")
def recognition_check(
    ctx: ContextDep, reader: ReaderDep,
    patient: Annotated[str, Body(description="Patient/<facility>.<id>")],
    items: Annotated[list[str], Body(description="Catalogue item codes being ordered")],
    time: Annotated[str | None, Body(description="Order time, RFC 3339; default now")] = None,
    facility: Annotated[str | None, Body(description="Ordering facility; default caller")
                        ] = None,
) -> FhirResponse:
    """Per ordered item: the recognisable prior results (which, where, when, why they
    qualify, what re-testing would cost) or why none does."""
    key = patient.rstrip("/").split("/")[-1]
    if not may_read_patient(reader, key):
        return error(403, f"{reader.kind} {reader.id} may not read patients of "
                     f"{key.partition('.')[0]}", "forbidden")
    if not items:
        return error(400, "items: name at least one catalogue item code", "required")
    try:
        ordered_at = datetime.fromisoformat(time.replace("Z", "+00:00")) if time else \
            datetime.now(CONSORTIUM_TZ)
    except ValueError:
        return error(400, f"time: {time!r} is not an RFC 3339 time", "value")
    if ordered_at.tzinfo is None:
        ordered_at = ordered_at.replace(tzinfo=CONSORTIUM_TZ)
    catalogue = _catalogue(ctx)
    wanted = [catalogue.item(c) for c in items]
    loinc = [code for it in wanted if it for code in it.loinc]
    imaging = any(it and it.category in ("imaging", "ecg", "pathology") for it in wanted)
    allowed = readable_facilities(reader)
    keys = [k for k in linked_records(ctx.store, key)
            if allowed is None or k.partition(".")[0] in allowed]
    results = rec_read.prior_results(ctx.store, keys, loinc, imaging)
    registry = {f.id: f.record for f in ctx.directory}
    verdicts = check(catalogue, items, results, registry,
                     ordered_at.astimezone(CONSORTIUM_TZ).date())
    from hub.api.read import _audit

    _audit(ctx, reader, "operation", f"recognition/$check?patient={key}", set(keys))
    return FhirResponse({
        "patient": f"Patient/{key}", "ordering_facility": facility or reader.id,
        "ordered": ordered_at.astimezone(CONSORTIUM_TZ).date().isoformat(),
        "items": [{"item": v.item, "name": v.name, "mark": v.mark,
                   "recognisable": v.recognisable, "not_recognisable": v.not_recognisable,
                   "reason": v.reason} for v in verdicts]})


_CACHE: dict = {}


def _catalogue(ctx):
    path = ctx.settings.recognition_catalogue
    if path not in _CACHE:
        _CACHE[path] = load_catalogue(path)
    return _CACHE[path]
