"""A whole hub (API + ingest + projections) on the session broker, for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

import httpx

from adapters.hl7v2.intake import Hl7Intake
from adapters.hl7v2.mllp import MllpServer
from hub.config import Settings
from hub.engine.receipts import ReceiptWaiter
from hub.log.broker import free_port
from hub.service import Hub
from hub.signing import demo_signer


@asynccontextmanager
async def mllp_listener(settings: Settings, hub: Hub, facility: str = "township-1"):
    """An MLLP listener for ``facility`` on a free port, publishing through ``hub``; like
    ``hub mllp``, it answers AA once the hub's receipts say the journal has the message when
    the hub's acknowledgements are durable."""
    receipts = ReceiptWaiter(settings, facility) if hub.acks is not None else None
    if receipts is not None:
        await receipts.start()
    server = MllpServer(Hl7Intake(settings, facility, demo_signer(facility), hub.publisher,
                                  hub.store, receipts), "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        if receipts is not None:
            await receipts.stop()


@asynccontextmanager
async def running_hub(settings: Settings):
    settings = settings.model_copy(update={"api_port": free_port()})
    async with Hub(settings, start_broker=False) as hub:
        hub.start_api()
        hub.start_registry_watch()
        hub.start_ingest()
        hub.start_projections()
        await hub.api_ready()
        yield hub, f"http://127.0.0.1:{settings.api_port}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 45.0) -> None:
    """Wait until ``check`` holds: projections are eventually consistent with the log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def status_of(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code


async def put_resource(base: str, token: str, resource: dict) -> None:
    """PUT a resource through the gateway as the facility owning ``token``."""
    async with httpx.AsyncClient(base_url=base, headers=auth(token)) as c:
        r = await c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.text
