"""FHIR Bulk Data export: kick-off, status, files.

``GET /fhir/$export`` (every record the reader may export), ``GET /fhir/Patient/$export``
(patients' compartments only), ``GET /fhir/Group/{id}/$export`` (a group of facilities: a
registry group such as ``county-community``, or a tier as ``tier-township-centre``), with
``Prefer: respond-async``: 202 and a Content-Location to poll. Polling answers 202 with
``X-Progress`` while the job runs, 200 with the manifest when done, 500 with an
OperationOutcome if it failed; DELETE cancels. The manifest's files are served with the
same token. ``_deidentify=true`` (the hub's parameter, not the specification's) writes the
de-identified variant for research (``hub.export.deidentify``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, Response

from hub import clock
from hub.access.rules import (
    EXPORT,
    RESEARCH,
    Principal,
    export_facilities,
    may_export,
)
from hub.api.consent_check import CONSENT_MARK, consent_excluded
from hub.api.deps import ContextDep, HubContext, ScopeError, get_reader
from hub.api.guard import audit, forbidden
from hub.api.outcome import FhirResponse, error
from hub.consent.rules import RESEARCH as RESEARCH_PURPOSE
from hub.export import jobs
from hub.export.runner import ExportRunner
from hub.export.writer import ExportSpec, types_of
from hub.fhir import ACCEPTED_TYPES
from hub.identity import identity_secret
from hub.record.rules import utc_instant

router = APIRouter(tags=["export"])
NDJSON = "application/fhir+ndjson"
FORMATS = {NDJSON, "application/ndjson", "ndjson"}
PARAMS = {"_outputFormat", "_type", "_since", "_deidentify"}
TIER_GROUP = "tier-"


async def _exporter(request: Request) -> Principal:
    reader = await get_reader(request)
    if not (may_export(reader, True) or may_export(reader, False)):
        raise ScopeError(f"{reader.kind} {reader.id} has no access to bulk export (an app "
                         f"needs {EXPORT!r}, or {RESEARCH!r} for de-identified exports)")
    return reader


_exporter.projection = EXPORT  # type: ignore[attr-defined]  # for the route audit
ExporterDep = Annotated[Principal, Depends(_exporter)]


def runner_of(ctx: HubContext) -> ExportRunner:
    if ctx.exports is None:
        ctx.exports = ExportRunner(ctx.store, ctx.settings.data_dir / "exports")
    return ctx.exports


def _retention(ctx: HubContext) -> timedelta:
    return timedelta(hours=ctx.settings.export_retention_hours)


def _sweep(ctx: HubContext) -> None:
    """Expired exports go before anyone can ask for them (no timer needed: nobody can
    download an export without asking the hub first)."""
    jobs.sweep(runner_of(ctx).root, clock.now(), _retention(ctx))


def _group_facilities(ctx: HubContext, group: str) -> frozenset[str] | None:
    tier = group.removeprefix(TIER_GROUP) if group.startswith(TIER_GROUP) else None
    found = frozenset(f.id for f in ctx.directory
                      if (f.tier == tier if tier is not None else f.group == group))
    return found or None


def _kick_off(request: Request, ctx: HubContext, reader: Principal, patients_only: bool,
              group: str | None = None) -> FhirResponse:
    params = request.query_params
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        return error(400, f"unsupported $export parameter(s): {', '.join(unknown)}; this hub "
                     f"supports {', '.join(sorted(PARAMS))}", "not-supported")
    if "respond-async" not in request.headers.get("prefer", ""):
        return error(400, "a bulk export runs in the background: send Prefer: respond-async",
                     "required", "Prefer")
    if params.get("_outputFormat", NDJSON) not in FORMATS:
        return error(400, f"_outputFormat: only {NDJSON}", "not-supported", "_outputFormat")
    deidentified = params.get("_deidentify", "false")
    if deidentified not in ("true", "false"):
        return error(400, "_deidentify: true or false", "value", "_deidentify")
    deidentify = deidentified == "true"
    asked = [t.strip() for t in ",".join(params.getlist("_type")).split(",") if t.strip()]
    if bad := sorted(set(asked) - set(ACCEPTED_TYPES)):
        return error(400, f"_type: {', '.join(bad)} is not a type this hub serves (see "
                     "/fhir/metadata)", "not-supported", "_type")
    since = None
    if "_since" in params:
        try:
            datetime.fromisoformat(params["_since"].replace("Z", "+00:00"))
        except ValueError:
            return error(400, "_since: a FHIR instant, e.g. 2026-11-01T00:00:00Z", "value",
                         "_since")
        since = utc_instant(params["_since"])
    if not may_export(reader, deidentify):
        return forbidden(f"{reader.kind} {reader.id} may export de-identified records only: "
                         "add _deidentify=true")
    facilities = export_facilities(reader)
    if group is not None:
        members = _group_facilities(ctx, group)
        if members is None:
            return error(404, f"Group/{group} is neither a registry group nor a tier "
                         f"({TIER_GROUP}<tier>)", "not-found")
        facilities = members if facilities is None else facilities & members
    purpose = RESEARCH_PURPOSE if deidentify else None
    excluded = consent_excluded(ctx, reader, purpose)
    job = jobs.Job(jobs.new_job_id(), reader.kind, reader.id, str(request.url),
                   clock.now_rfc3339(), deidentify)
    # Records a consent keeps out of this export, audited as refused before it starts.
    for key, consent in sorted(excluded.items()):
        if facilities is None or key.partition(".")[0] in facilities:
            audit(ctx, reader, "operation", f"{job.request} (export {job.id})"
                  f"{CONSENT_MARK}Consent/{consent}]", {key}, "4")
    spec = ExportSpec(types_of(asked, ACCEPTED_TYPES), patients_only, facilities,
                      frozenset(excluded), since, identity_secret() if deidentify else None)
    _sweep(ctx)
    runner_of(ctx).submit(job, spec)
    location = f"{str(request.base_url).rstrip('/')}/export/jobs/{job.id}"
    return FhirResponse({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational",
         "diagnostics": f"export {job.id} started; poll {location}"}]},
        status_code=202, headers={"Content-Location": location})


@router.get("/fhir/$export")
def export_system(request: Request, ctx: ContextDep, reader: ExporterDep) -> FhirResponse:
    """Every record the reader may export, all types (or ``_type``)."""
    return _kick_off(request, ctx, reader, patients_only=False)


@router.get("/fhir/Patient/$export")
def export_patients(request: Request, ctx: ContextDep, reader: ExporterDep) -> FhirResponse:
    """The compartments of every patient the reader may export."""
    return _kick_off(request, ctx, reader, patients_only=True)


@router.get("/fhir/Group/{group}/$export")
def export_group(group: str, request: Request, ctx: ContextDep, reader: ExporterDep
                 ) -> FhirResponse:
    """The patients of a group of facilities: a registry group, or ``tier-<tier>``."""
    return _kick_off(request, ctx, reader, patients_only=True, group=group)


def _job(ctx: HubContext, reader: Principal, job_id: str) -> jobs.Job | FhirResponse:
    _sweep(ctx)
    job = jobs.load(runner_of(ctx).root, job_id)
    if job is None or (job.owner_kind, job.owner_id) != (reader.kind, reader.id):
        # Another reader's job is as unknown as a missing one: ids are not for probing.
        return error(404, f"no export {job_id} of yours", "not-found")
    return job


@router.get("/export/jobs/{job_id}")
def export_status(job_id: str, request: Request, ctx: ContextDep, reader: ExporterDep
                  ) -> Response:
    """202 with X-Progress while it runs; 200 with the manifest; 500 if it failed."""
    job = _job(ctx, reader, job_id)
    if isinstance(job, FhirResponse):
        return job
    runner = runner_of(ctx)
    if job.status == jobs.IN_PROGRESS and not runner.running(job.id):
        job = jobs.load(runner.root, job_id) or job  # it may have finished meanwhile
        if job.status == jobs.IN_PROGRESS:
            return error(500, "the hub stopped during this export; start it again",
                         "incomplete")
    if job.status == jobs.IN_PROGRESS:
        return Response(status_code=202, headers={"X-Progress": job.progress,
                                                  "Retry-After": "2"})
    if job.status == jobs.FAILED:
        return error(500, f"the export failed: {job.error}", "exception")
    base = f"{str(request.base_url).rstrip('/')}/export/jobs/{job.id}"
    manifest = {"transactionTime": job.transaction_time, "request": job.request,
                "requiresAccessToken": True,
                "output": [{"type": o["type"], "url": f"{base}/{o['file']}",
                            "count": o["count"]} for o in job.output],
                "error": []}
    if job.deidentified:
        manifest["extension"] = {"urn:hie:deidentified": True}
    expires = job.expires(_retention(ctx))
    headers = {"Expires": format_datetime(expires, usegmt=True)} if expires else {}
    return FhirResponse(manifest, media_type="application/json", headers=headers)


@router.delete("/export/jobs/{job_id}")
def export_cancel(job_id: str, ctx: ContextDep, reader: ExporterDep) -> Response:
    """Cancel a running export, or delete a finished one's files."""
    job = _job(ctx, reader, job_id)
    if isinstance(job, FhirResponse):
        return job
    runner_of(ctx).cancel(job.id)
    return Response(status_code=202)


@router.get("/export/jobs/{job_id}/{name}")
def export_file(job_id: str, name: str, ctx: ContextDep, reader: ExporterDep) -> Response:
    """One ndjson file of a finished export, streamed from disk."""
    job = _job(ctx, reader, job_id)
    if isinstance(job, FhirResponse):
        return job
    if job.status != jobs.COMPLETE or name not in {o["file"] for o in job.output}:
        return error(404, f"export {job_id} has no file {name}", "not-found")
    return FileResponse(runner_of(ctx).root / job.id / name, media_type=NDJSON)

