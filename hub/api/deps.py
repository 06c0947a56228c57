"""Typed dependencies for routes: the hub context and the authenticated facility."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from hub.access.rules import Principal, may_read_projection
from hub.api.gate import RequestGate
from hub.config import Settings
from hub.deadletters.keeper import DeadLetterKeeper
from hub.engine.acks import JournalAcks
from hub.errors import AuthError
from hub.facilities import Facility, FacilityDirectory
from hub.ingest.checks import EdgeChecks
from hub.log.producer import Publisher
from hub.monitoring.intake import DeviceIntake
from hub.mpi.service import MpiService
from hub.registry.care import CareRegistry
from hub.store.db import Store


@dataclass
class HubContext:
    settings: Settings
    store: Store
    directory: FacilityDirectory
    publisher: Publisher
    checks: EdgeChecks
    deadletters: DeadLetterKeeper  # the gateway's refusals: SQL first, then the topic
    mpi: MpiService | None = None  # set where the patient index runs (with the projections)
    # The running process's own report for /ready (broker, store, components, journal lag).
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None
    acks: JournalAcks | None = None  # set when a 2xx waits for the journal (ack_after)
    gate: RequestGate = field(default_factory=RequestGate)  # closed by a graceful stop
    care: CareRegistry = field(default_factory=CareRegistry)  # teams, residents, devices
    devices: DeviceIntake | None = None  # home readings (POST /devices/{id}/readings)
    exports: Any = None  # the ExportRunner, made on the first $export (hub.api.export)
    # This process's projection runners (hub.service.Hub.runner_states), for the console.
    runners: Callable[[], list[dict[str, Any]]] | None = None


async def get_context(request: Request) -> HubContext:  # async: no threadpool hop
    return request.app.state.hub


def bearer_token(request: Request) -> str | None:
    """The bearer token of the Authorization header, None without one."""
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def get_facility(request: Request) -> Facility:
    ctx: HubContext = request.app.state.hub
    facility = ctx.directory.authenticate(bearer_token(request))
    request.state.facility = facility
    return facility


async def get_reader(request: Request) -> Principal:
    ctx: HubContext = request.app.state.hub
    return ctx.directory.reader(bearer_token(request))


class ScopeError(Exception):
    """The reader is authenticated but its scopes do not include what the endpoint reads
    (answered 403 by the app)."""


def scoped(projection: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the reader, if its scopes include ``projection``; else ScopeError.

    Endpoints declare the projection they read in their signature, so a scope check cannot
    be forgotten in the body (tests/e2e/test_access_holes.py walks every route).
    """

    async def reader_of(request: Request) -> Principal:
        reader = await get_reader(request)
        if not may_read_projection(reader, projection):
            raise ScopeError(f"{reader.kind} {reader.id} has no access to {projection}")
        return reader

    reader_of.projection = projection  # type: ignore[attr-defined]  # for the route audit
    return reader_of


ContextDep = Annotated[HubContext, Depends(get_context)]
FacilityDep = Annotated[Facility, Depends(get_facility)]
# For endpoints whose projection depends on the request (search), checked in the body.
ReaderDep = Annotated[Principal, Depends(get_reader)]
SharedRecordReaderDep = Annotated[Principal, Depends(scoped("shared_record"))]
LabReaderDep = Annotated[Principal, Depends(scoped("lab"))]
ImagingReaderDep = Annotated[Principal, Depends(scoped("imaging"))]
RecognitionReaderDep = Annotated[Principal, Depends(scoped("recognition"))]
MpiReaderDep = Annotated[Principal, Depends(scoped("mpi"))]
ReferralReaderDep = Annotated[Principal, Depends(scoped("referral"))]
MonitoringReaderDep = Annotated[Principal, Depends(scoped("monitoring"))]

__all__ = ["AuthError", "ContextDep", "FacilityDep", "HubContext", "ImagingReaderDep",
           "LabReaderDep", "MonitoringReaderDep", "MpiReaderDep", "ReaderDep",
           "RecognitionReaderDep", "ReferralReaderDep", "ScopeError", "SharedRecordReaderDep",
           "scoped"]
