"""Recognition, reading and referral: the statistics pages, with their charts' data.

Each page needs the scope its API route needs (hub.console.access.PAGES). Worklists name
patients, so showing one is audited like ``GET /imaging/worklist``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hub import clock
from hub.api.consent_check import consented
from hub.api.guard import audit
from hub.api.recognition import stats_csv, stats_rows
from hub.console.access import is_operator
from hub.console.session import Session
from hub.console.web import chart, context, for_page, render, secured
from hub.imaging import read as img
from hub.monitoring import read as monitoring_read
from hub.recognition.decisions import REASONS
from hub.referral import read as ref_read

router = APIRouter(prefix="/console", include_in_schema=False)
Month = Annotated[str | None, Query(pattern=r"^(\d{4}-\d{2})?$")]
Name = Annotated[str | None, Query(max_length=64)]
SERVICES = ("imaging", "ecg", "pathology")
TURNAROUND_DAYS = 30
Recognition = Annotated[Session, Depends(for_page("/console/recognition"))]
Reading = Annotated[Session, Depends(for_page("/console/reading"))]
Referral = Annotated[Session, Depends(for_page("/console/referrals"))]
Monitoring = Annotated[Session, Depends(for_page("/console/monitoring"))]


def _tiers(request: Request) -> dict[str, str]:
    return {f.id: f.tier for f in context(request).directory}


@router.get("/recognition")
async def recognition(request: Request, session: Recognition, month: Month = None,
                      facility: Name = None) -> Response:
    rows = await run_in_threadpool(stats_rows, context(request), facility or None,
                                   month or None)
    tiers = _tiers(request)
    grouped: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        key = (r["item"], tiers.get(r["facility"], "unknown"), r["month"])
        g = grouped.setdefault(key, {"item": key[0], "tier": key[1], "month": key[2],
                                     "recognised": 0, "retested": 0, "saved_yuan": 0.0,
                                     "reasons": defaultdict(int)})
        g["recognised"] += r["recognised"]
        g["retested"] += r["retested"]
        g["saved_yuan"] += r["saved_yuan"]
        for code, n in r["reasons"].items():
            g["reasons"][code] += n
    saved_by_month: dict[str, float] = defaultdict(float)
    by_item: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for g in grouped.values():
        saved_by_month[g["month"]] += g["saved_yuan"]
        by_item[g["item"]][0] += g["recognised"]
        by_item[g["item"]][1] += g["retested"]
    months = sorted(saved_by_month)
    items = sorted(by_item)
    charts = [
        chart("bar", months, "Yuan saved per month by recognised results",
              saved_yuan=[round(saved_by_month[m], 2) for m in months]),
        chart("bar", items, "Recognised and re-tested per item", stacked=True,
              recognised=[by_item[i][0] for i in items],
              retested=[by_item[i][1] for i in items]),
    ]
    return render(request, session, "recognition.html", rows=list(grouped.values()),
                  reasons=REASONS, charts=charts, month=month or "", facility=facility or "",
                  total_saved=round(sum(saved_by_month.values()), 2))


@router.get("/recognition.csv")
async def recognition_csv(request: Request, _: Recognition, month: Month = None,
                          facility: Name = None) -> Response:
    rows = await run_in_threadpool(stats_rows, context(request), facility or None,
                                   month or None)
    return secured(Response(stats_csv(rows), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition":
                                     "attachment; filename=recognition.csv"}))


def _centres(request: Request) -> list[str]:
    return sorted({c for f in context(request).directory for svc in SERVICES
                   if (c := f.record.reading_centre(svc))})


@router.get("/reading")
async def reading(request: Request, session: Reading, centre: Name = None) -> Response:
    ctx = context(request)
    registry = {f.id: f.record for f in ctx.directory}
    centres = _centres(request)
    summary, studies = [], None
    lists = await run_in_threadpool(img.worklists, ctx.store, registry, centres)
    for c in centres:
        items = lists[c]
        summary.append({"centre": c, "waiting": len(items),
                        "breached": sum(i["breached"] for i in items),
                        "claimed": sum(i["claim"] is not None for i in items)})
        if c == centre:
            studies = items
    who = session.principal
    # The worklist names patients: a member facility's reader (as in the API) or an operator.
    may_list = who.kind == "facility" or is_operator(who)
    if studies is not None and may_list:
        # As in the API's worklist: studies of patients whose consent keeps this login out
        # are not listed (the counts above are counts, naming nobody).
        studies = await run_in_threadpool(consented, ctx, who, studies,
                                          lambda i: (i["patient_key"],))
        await run_in_threadpool(audit, ctx, who, "search-type",
                                f"console/reading?centre={centre}",
                                {i["patient_key"] for i in studies})
    since = clock.rfc3339(clock.now() - timedelta(days=TURNAROUND_DAYS))
    turnaround = await run_in_threadpool(img.turnaround, ctx.store, "centre+modality",
                                         since, False)
    charts = [chart("bar", [t["centre+modality"] for t in turnaround],
                    "Turnaround, acquisition to first report (minutes), per centre and modality",
                    p50=[t["p50_minutes"] for t in turnaround],
                    p90=[t["p90_minutes"] for t in turnaround])]
    return render(request, session, "reading.html", summary=summary, centre=centre or "",
                  centres=centres, studies=studies if may_list else None,
                  turnaround=turnaround, charts=charts)


@router.get("/referrals")
async def referrals(request: Request, session: Referral, month: Month = None) -> Response:
    ctx = context(request)
    registry = {f.id: f.record for f in ctx.directory}
    rows = await run_in_threadpool(ref_read.statistics, ctx.store, registry,
                                   ref_read.referral_policy(ctx.settings), month or None)
    charts = [chart("bar", [f"{r['tier']} {r['month']}" for r in rows],
                    "Up-referrals and those closed by a down-referral, per sending tier",
                    up_referrals=[r["up_referrals"] for r in rows],
                    closed_by_down_referral=[r["closed_by_down_referral"] for r in rows])]
    return render(request, session, "referrals.html", rows=rows, charts=charts,
                  month=month or "")


@router.get("/monitoring")
async def monitoring(request: Request, session: Monitoring, team: Name = None) -> Response:
    ctx = context(request)
    sla = ctx.settings.monitoring.sla_hours
    teams = await run_in_threadpool(monitoring_read.alerts_by_team, ctx.store, sla)
    who = session.principal
    # A team's list names its patients: the team's own facility (as in the API's worklist)
    # or an operator.
    if who.kind == "facility":
        listable = await run_in_threadpool(monitoring_read.teams_of, ctx.store, who.id)
    else:
        listable = sorted({t.id for t in ctx.care.teams} | {t["team"] for t in teams}
                          ) if is_operator(who) else []
    alerts = None
    if team and team in listable:
        alerts = await run_in_threadpool(lambda: monitoring_read.worklist(
            ctx.store, sla, teams=[team]))
        alerts = await run_in_threadpool(consented, ctx, who, alerts,
                                         lambda a: (a["patient_key"],))
        await run_in_threadpool(audit, ctx, who, "search-type",
                                f"console/monitoring?team={team}",
                                {a["patient_key"] for a in alerts})
    charts = [chart("bar", [t["team"] for t in teams], "Open and acknowledged alerts per team",
                    stacked=True, open=[t["open"] for t in teams],
                    acknowledged=[t["acknowledged"] for t in teams])]
    return render(request, session, "monitoring.html", teams=teams, listable=listable,
                  team=team or "", alerts=alerts, charts=charts, sla_hours=sla)
