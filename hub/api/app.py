"""The FastAPI application: gateway + read API + health and metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import hub
from hub.api import gateway, imaging, lab, mpi, read, recognition
from hub.api.deps import HubContext
from hub.api.docs import install_docs
from hub.api.outcome import FhirResponse, error, unavailable
from hub.errors import AuthError, BrokerError, HubError, StoreError
from hub.fhir import Issue


def capability_statement() -> dict:
    types = ["Patient", "Observation", "DiagnosticReport", "ImagingStudy", "Organization",
             "Practitioner", "Specimen", "ServiceRequest", "Device"]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "hie-hub", "version": hub.__version__},
        "fhirVersion": "4.3.0",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": [{
                "type": t,
                "interaction": [{"code": c} for c in ("read", "search-type", "create",
                                                       "update", "delete")],
                "searchParam": [{"name": "patient", "type": "reference"},
                                {"name": "_id", "type": "token"}],
            } for t in types],
        }],
    }


def create_app(ctx: HubContext) -> FastAPI:
    """The app for an already started publisher and store (the caller owns their lifetime)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield

    app = FastAPI(title="HIE hub", version=hub.__version__, lifespan=lifespan,
                  default_response_class=FhirResponse,
                  docs_url=None, redoc_url=None)  # the CDN-free pages of install_docs
    app.state.hub = ctx

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError):
        return error(401, str(exc), "login", "Authorization")

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

        return outcome_response(400, [Issue(".".join(str(p) for p in e["loc"]), e["msg"])
                                      for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return error(exc.status_code, str(exc.detail), code)

    @app.get("/fhir/metadata", tags=["read"])
    def metadata() -> FhirResponse:
        return FhirResponse(capability_statement())

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> FhirResponse:
        return FhirResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(gateway.router)
    app.include_router(lab.router)
    app.include_router(read.router)
    app.include_router(mpi.router)
    app.include_router(imaging.router)
    app.include_router(recognition.router)
    install_docs(app)
    return app
