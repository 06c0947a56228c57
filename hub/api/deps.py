"""Typed dependencies for routes: the hub context and the authenticated facility."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from hub.access.rules import Principal
from hub.config import Settings
from hub.deadletters.keeper import DeadLetterKeeper
from hub.errors import AuthError
from hub.facilities import Facility, FacilityDirectory
from hub.ingest.checks import EdgeChecks
from hub.log.producer import Publisher
from hub.mpi.service import MpiService
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


async def get_context(request: Request) -> HubContext:  # async: no threadpool hop
    return request.app.state.hub


async def get_facility(request: Request) -> Facility:
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    ctx: HubContext = request.app.state.hub
    facility = ctx.directory.authenticate(token.strip() or None)
    request.state.facility = facility
    return facility


async def get_reader(request: Request) -> Principal:
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    ctx: HubContext = request.app.state.hub
    return ctx.directory.reader(token.strip() if scheme.lower() == "bearer" else None)


ContextDep = Annotated[HubContext, Depends(get_context)]
FacilityDep = Annotated[Facility, Depends(get_facility)]
ReaderDep = Annotated[Principal, Depends(get_reader)]

__all__ = ["AuthError", "ContextDep", "FacilityDep", "HubContext", "ReaderDep"]
