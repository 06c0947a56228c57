"""``POST /recognition/$check``: which ordered items a prior result can stand in for."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from hub import clock
from hub.access.rules import may_read_patient, readable_facilities
from hub.api.consent_check import refused_by_consent, withheld_links
from hub.api.deps import ContextDep, RecognitionReaderDep
from hub.api.guard import audit
from hub.api.outcome import FhirResponse, error
from hub.api.publish import publish_acknowledged
from hub.envelope import now_rfc3339
from hub.recognition.catalogue import load_catalogue
from hub.recognition.rules import CONSORTIUM_TZ
from hub.recognition.service import run_check

router = APIRouter(prefix="/recognition", tags=["mutual test recognition"])


@router.post("/$check")
def recognition_check(
    ctx: ContextDep, reader: RecognitionReaderDep,
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
    what = f"recognition/$check?patient={key}"
    withheld = withheld_links(ctx, reader, key)
    if refused := refused_by_consent(ctx, reader, key, "operation", what, withheld=withheld):
        return refused
    try:
        ordered_at = datetime.fromisoformat(time.replace("Z", "+00:00")) if time else \
            clock.now().astimezone(CONSORTIUM_TZ)
    except ValueError:
        return error(400, f"time: {time!r} is not an RFC 3339 time", "value")
    if ordered_at.tzinfo is None:
        ordered_at = ordered_at.replace(tzinfo=CONSORTIUM_TZ)
    registry = {f.id: f.record for f in ctx.directory}
    keys, verdicts = run_check(ctx.store, registry, catalogue_of(ctx), key, items,
                               ordered_at.astimezone(CONSORTIUM_TZ).date(),
                               readable_facilities(reader), withheld)
    audit(ctx, reader, "operation", what, set(keys))
    return FhirResponse({
        "patient": f"Patient/{key}", "ordering_facility": facility or reader.id,
        "ordered": ordered_at.astimezone(CONSORTIUM_TZ).date().isoformat(),
        "items": [{"item": v.item, "name": v.name, "mark": v.mark,
                   "recognisable": v.recognisable, "not_recognisable": v.not_recognisable,
                   "reason": v.reason} for v in verdicts]})


_CACHE: dict = {}


def catalogue_of(ctx):
    """The recognition catalogue the hub is configured with (read once per path)."""
    path = ctx.settings.recognition_catalogue
    if path not in _CACHE:
        _CACHE[path] = load_catalogue(path)
    return _CACHE[path]


@router.post("/decisions", status_code=201)
async def decide(
    ctx: ContextDep, reader: RecognitionReaderDep,
    patient: Annotated[str, Body(description="Patient/<facility>.<id>")],
    item: Annotated[str, Body(description="Catalogue item code")],
    decision: Annotated[str, Body(description="recognised or retested")],
    result: Annotated[str | None, Body(description="The prior result accepted, e.g. "
                                       "Observation/township-1.g1")] = None,
    reason: Annotated[str | None, Body(description="Reason code, required for a re-test "
                                       "(schemas/recognition-reasons.json)")] = None,
    text: Annotated[str | None, Body(description="Free text; required for 'other'")] = None,
) -> FhirResponse:
    """Record the ordering doctor's decision as an event: the prior result was recognised,
    or the test is repeated for a coded reason. A re-test without a reason is refused."""
    from hub.ingest.prepare import prepare_upsert
    from hub.recognition.decisions import Decision, DecisionError, decision_task

    facility = ctx.directory.get(reader.id) if reader.kind == "facility" else None
    if facility is None:
        return error(403, "decisions are recorded by the ordering member facility",
                     "forbidden")
    catalogue = catalogue_of(ctx)
    found = catalogue.item(item)
    key = patient.rstrip("/").split("/")[-1]
    try:
        task = decision_task(Decision(key, item, decision, result, reason, text),
                             found.price_yuan if found else 0.0, now_rfc3339())
    except DecisionError as exc:
        return error(422, str(exc), "required" if "needs" in str(exc) else "value")
    prepared = prepare_upsert(facility, task, "Task", members=ctx.directory)
    if not prepared.ok:
        return error(422, prepared.issues[0].diagnostics, "invalid")
    await publish_acknowledged(ctx, [prepared.envelope])
    return FhirResponse(prepared.resource, status_code=201)


def stats_rows(ctx, facility: str | None, month: str | None) -> list[dict]:
    import sqlalchemy as sa

    from hub.recognition.projection import REASONS, STATS

    s, r = _stats_tables()[STATS], _stats_tables()[REASONS]
    where_s, where_r = [], []
    for col_s, col_r, value in ((s.c.facility, r.c.facility, facility),
                                (s.c.month, r.c.month, month)):
        if value:
            where_s.append(col_s == value)
            where_r.append(col_r == value)
    with ctx.store.connect() as conn:
        stats = conn.execute(sa.select(s).where(*where_s)
                             .order_by(s.c.facility, s.c.month, s.c.item)).mappings().all()
        reasons = conn.execute(sa.select(r).where(*where_r)).mappings().all()
    by_key: dict[tuple, dict[str, int]] = {}
    for x in reasons:
        by_key.setdefault((x["facility"], x["month"], x["item"]), {})[x["reason"]] = \
            x["decisions"]
    out = []
    for x in stats:
        decided = x["recognised"] + x["retested"]
        out.append({"facility": x["facility"], "month": x["month"], "item": x["item"],
                    "recognised": x["recognised"], "retested": x["retested"],
                    "not_counted": x["not_counted"],
                    "recognition_rate": round(x["recognised"] / decided, 4) if decided else None,
                    "saved_yuan": x["saved_fen"] / 100,
                    "reasons": by_key.get((x["facility"], x["month"], x["item"]), {})})
    return out


@router.get("/statistics")
def statistics(ctx: ContextDep, reader: RecognitionReaderDep, facility: str | None = None,
               month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None
               ) -> FhirResponse:
    """Items recognised, recognition rate, non-recognition reasons and yuan saved, per
    ordering facility, month (Asia/Shanghai) and item."""
    rows = stats_rows(ctx, facility, month)
    total_saved = sum(r["saved_yuan"] for r in rows)
    return FhirResponse({"rows": rows, "recognised": sum(r["recognised"] for r in rows),
                         "retested": sum(r["retested"] for r in rows),
                         "saved_yuan": round(total_saved, 2)})


@router.get("/statistics.csv")
def statistics_csv(ctx: ContextDep, reader: RecognitionReaderDep, facility: str | None = None,
                   month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None
                   ) -> Response:
    """The same as CSV (UTF-8 with BOM, so spreadsheet programs show Chinese correctly)."""
    return Response(stats_csv(stats_rows(ctx, facility, month)),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=recognition.csv"})


def stats_csv(rows: list[dict]) -> str:
    """Statistics rows as CSV text, with the BOM spreadsheet programs look for."""
    import csv
    import io

    from hub.recognition.decisions import REASONS as CODES

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["facility", "month", "item", "recognised", "retested", "not_counted",
                "recognition_rate", "saved_yuan", *CODES])
    for r in rows:
        w.writerow([r["facility"], r["month"], r["item"], r["recognised"], r["retested"],
                    r["not_counted"], "" if r["recognition_rate"] is None
                    else r["recognition_rate"], f"{r['saved_yuan']:.2f}",
                    *(r["reasons"].get(c, 0) for c in CODES)])
    return "\ufeff" + buf.getvalue()


@functools.cache
def _stats_tables():
    import sqlalchemy as sa

    from hub.recognition.projection import RecognitionProjection

    return RecognitionProjection().tables(sa.MetaData())
