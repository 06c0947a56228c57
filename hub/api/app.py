"""The FastAPI application: gateway + read API + health and metrics."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import hub
from hub.access import audit_store
from hub.access.rules import Principal, may_read_metrics, refused_credential
from hub.api import (
    deadletters,
    export,
    gateway,
    imaging,
    lab,
    monitoring,
    mpi,
    read,
    recognition,
    referral,
)
from hub.api.capability import capability_statement
from hub.api.deps import HubContext, ScopeError, bearer_token, get_reader
from hub.api.docs import install_asyncapi, install_docs
from hub.api.gate import GateMiddleware, RequestGate
from hub.api.outcome import FhirResponse, error, unavailable
from hub.console import install_console
from hub.envelope import now_rfc3339
from hub.errors import AuthError, BrokerError, HubError, StoreError
from hub.fhir import Issue
from hub.record.read import current_patient_key

log = logging.getLogger(__name__)


class RefuseNulInUrl:
    """Answer 400 to a URL holding NUL (``%00``) before any route runs: no store can hold
    it, so a search or an audit record naming it would fail as a store outage (503)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"]
                                        or b"%00" in scope["query_string"]):
            refused = error(400, "the URL contains a NUL character (%00), which no store can "
                            "hold", "value", "(url)")
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _named_patient(ctx: HubContext, request: Request) -> str:
    """The patient a request names (query, ``Patient/<id>`` path, or the patient of the
    resource a read names), so a refused attempt shows in that patient's trail; else ""."""
    for name in ("patient", "subject"):
        if value := request.query_params.get(name):
            return value.rstrip("/").split("/")[-1]
    parts = [p for p in request.url.path.split("/") if p]
    if parts[:2] == ["fhir", "Patient"] and len(parts) >= 3:
        return parts[2]
    if parts[:2] == ["mpi", "records"] and len(parts) == 3:
        return parts[2]
    if request.method == "GET" and parts[:1] == ["fhir"] and len(parts) == 3:
        return current_patient_key(ctx.store, parts[1], parts[2]) or ""
    return ""


def _record_refusal(ctx: HubContext, request: Request) -> None:
    record = refused_credential(request.method, request.url.path, request.url.query,
                                bearer_token(request), _named_patient(ctx, request),
                                now_rfc3339())
    audit_store.record(ctx.store, [record])


def create_app(ctx: HubContext) -> FastAPI:
    """The app for an already started publisher and store (the caller owns their lifetime)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield

    app = FastAPI(title="HIE hub", version=hub.__version__, lifespan=lifespan,
                  default_response_class=FhirResponse,
                  docs_url=None, redoc_url=None)  # the CDN-free pages of install_docs
    app.state.hub = ctx
    app.add_middleware(RefuseNulInUrl)
    # Outermost (added last): a stopping hub refuses before anything else runs. (No context:
    # an app built only to list its routes.)
    app.add_middleware(GateMiddleware, gate=ctx.gate if ctx is not None else RequestGate())

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError):
        # Refused attempts are audited like refused reads, committed before the answer.
        try:
            await asyncio.to_thread(_record_refusal, ctx, request)
        except StoreError as failed:
            log.warning("could not audit a refused credential: %s", failed)
            return error(503, f"the store is unavailable: {failed}", "transient")
        return error(401, str(exc), "login", "Authorization")

    @app.exception_handler(ScopeError)
    async def _scope(_: Request, exc: ScopeError):
        return error(403, str(exc), "forbidden")

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError):
        return error(503, f"the store is unavailable: {exc}", "transient")

    @app.exception_handler(BrokerError)
    async def _broker(_: Request, exc: BrokerError):
        return unavailable(f"the event log is unavailable: {exc}")

    @app.exception_handler(HubError)
    async def _hub(_: Request, exc: HubError):
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        from hub.api.outcome import outcome_response

        # "_offset: Input should be less than or equal to 10000000", located at query._offset
        return outcome_response(400, [Issue(".".join(str(p) for p in e["loc"]),
                                            f"{e['loc'][-1]}: {e['msg']}", "value")
                                      for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return error(exc.status_code, str(exc.detail), code)

    @app.get("/fhir/metadata", tags=["read"])
    def metadata() -> FhirResponse:
        return FhirResponse(capability_statement())

    # Liveness: the process serves requests (whatever the broker or store are doing; an
    # orchestrator that restarts the hub for an outage elsewhere only adds to it).
    @app.get("/health", include_in_schema=False)
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> FhirResponse:
        return FhirResponse({"status": "ok"})

    # Readiness: broker and store reachable, every component of this process running.
    @app.get("/ready", include_in_schema=False)
    async def ready() -> FhirResponse:
        report = await ctx.readiness() if ctx.readiness is not None else {"ready": True}
        return FhirResponse(report, status_code=200 if report["ready"] else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics(reader: Annotated[Principal, Depends(get_reader)]) -> Response:
        # Counts per facility are the consortium's: a monitoring app's token, not a member's.
        if not may_read_metrics(reader):
            return error(403, f"{reader.kind} {reader.id} may not read the metrics: they need "
                         "an app token with the 'metrics' scope", "forbidden")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(gateway.router)
    app.include_router(lab.router)
    app.include_router(export.router)  # before read's /fhir/{type}/{id}, which $export fits
    app.include_router(read.router)
    app.include_router(mpi.router)
    app.include_router(imaging.router)
    app.include_router(recognition.router)
    app.include_router(referral.router)
    app.include_router(monitoring.router)
    install_docs(app)
    install_asyncapi(app)
    install_console(app)
    app.include_router(deadletters.router)
    return app
