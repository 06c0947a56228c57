"""The overview by tier, event lookup and the registry."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hub import clock
from hub.api.deps import HubContext
from hub.api.guard import audit
from hub.console import lookup, status, traffic
from hub.console.access import is_operator, traffic_facilities
from hub.console.web import SessionDep, chart, context, render
from hub.registry import read as registry_read
from hub.registry.model import TIER_RANK

router = APIRouter(prefix="/console", include_in_schema=False)
Text = Annotated[str | None, Query(max_length=300)]


READY_SECONDS = 5.0
_ready: dict[int, tuple[datetime, dict]] = {}
_refreshing: dict[int, asyncio.Task] = {}


async def _readiness(ctx: HubContext) -> tuple[dict | None, float]:
    """The process's /ready report and its age in seconds. It asks the broker, so a page
    never waits for it once there is one: a report older than READY_SECONDS is shown
    while a fresh one is asked for in the background."""
    if ctx.readiness is None:
        return None, 0.0
    key = id(ctx)
    cached = _ready.get(key)
    now = clock.now()
    if cached is None:
        _ready[key] = cached = (now, await ctx.readiness())
    elif (now - cached[0]).total_seconds() > READY_SECONDS and key not in _refreshing:
        async def refresh() -> None:
            try:
                _ready[key] = (clock.now(), await ctx.readiness())  # type: ignore[misc]
            finally:
                _refreshing.pop(key, None)

        _refreshing[key] = asyncio.create_task(refresh())
    return cached[1], (now - cached[0]).total_seconds()


@router.get("")
@router.get("/")
async def overview(request: Request, session: SessionDep) -> Response:
    ctx = context(request)
    who = session.principal
    visible = traffic_facilities(who)
    counts = await run_in_threadpool(traffic.recent, ctx.store, visible)
    runners = ctx.runners() if ctx.runners is not None else []
    projections = await run_in_threadpool(status.projection_rows, ctx.store, runners)
    ready, ready_age = await _readiness(ctx)
    records = {f.id: f.record for f in ctx.directory}
    tiers: dict[str, dict[str, int]] = {}
    for row in counts["by_facility"]:
        record = records.get(row["name"])
        tier = record.tier if record else "unknown"
        t = tiers.setdefault(tier, {"accepted": 0, "refused": 0})
        t["accepted"] += row["accepted"]
        t["refused"] += row["refused"]
    ordered = sorted(tiers.items(), key=lambda kv: TIER_RANK.get(kv[0], 99))
    alerts = [p["alert"] for p in projections if p["alert"]]
    charts = [chart("line", counts["labels"], "Events accepted and refused per minute",
                    accepted=counts["accepted"], refused=counts["refused"])]
    return render(request, session, "overview.html", counts=counts, tiers=ordered,
                  charts=charts, ready_age=ready_age,
                  projections=projections, ready=ready, alerts=alerts,
                  scope="every facility" if visible is None else ", ".join(sorted(visible)),
                  operator=is_operator(who))


@router.get("/events")
async def events(request: Request, session: SessionDep, q: Text = None) -> Response:
    ctx = context(request)
    found = []
    if q:
        found = await run_in_threadpool(lookup.find, ctx.store, q,
                                        [f.id for f in ctx.directory],
                                        traffic_facilities(session.principal))
        patients = {e["patient_key"] for e in found if e["patient_key"]}
        if patients:  # which patient an event is about is patient data: audited
            await run_in_threadpool(audit, ctx, session.principal, "search-type",
                                    f"console/events?q={q}", patients)
    return render(request, session, "events.html", q=q or "", found=found)


@router.get("/registry")
async def registry(request: Request, session: SessionDep, facility: Text = None
                   ) -> Response:
    ctx = context(request)
    records = sorted((f.record for f in ctx.directory),
                     key=lambda r: (TIER_RANK.get(r.tier, 99), r.id))
    history = None
    if facility:
        history = await run_in_threadpool(registry_read.history, ctx.store, facility)
    return render(request, session, "registry.html", records=records, facility=facility,
                  history=history)
