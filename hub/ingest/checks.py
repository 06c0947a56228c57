"""Where the edge's CPU work runs: inline, or in a pool of worker processes.

Validation is the costliest step of ingest and pure Python, so one process tops out at one
core. With ``HUB_VALIDATION_WORKERS=N`` the gateway and the ingest stage hand parsing,
validation and signing to N worker processes and keep only HTTP, Kafka and bookkeeping on
the event loop. The results are the same either way; only where they are computed differs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hub.config import Settings
from hub.facilities import Facility, FacilityDirectory
from hub.ingest.bundle import BodyPlan, plan_body
from hub.ingest.conditions import Resolution
from hub.ingest.verdict import InboundRecord, Verdict, check_inbound_many
from hub.registry.consortium_file import load_directory
from hub.signing import load_or_create_hub_key, use_hub_signer
from hub.worker_process import start_worker

_directory: FacilityDirectory | None = None
INLINE_SLICE = 100  # records checked inline between two turns of the event loop


def _init(facilities_file: Path | None, hub_key_file: Path) -> None:
    global _directory
    start_worker()
    _directory = load_directory(facilities_file)
    use_hub_signer(load_or_create_hub_key(hub_key_file))


def _plan(facility_id: str, body: bytes, resolutions: dict[int, Resolution]) -> BodyPlan:
    assert _directory is not None
    return plan_body(_directory.get(facility_id), body, _directory,  # type: ignore[arg-type]
                     resolutions)


def _check(records: list[InboundRecord]) -> list[Verdict]:
    assert _directory is not None
    return check_inbound_many(_directory, records)


class EdgeChecks:
    """Runs ``plan_body`` and ``check_inbound`` inline or on worker processes."""

    def __init__(self, settings: Settings, directory: FacilityDirectory) -> None:
        self.directory = directory
        self.settings = settings
        self.workers = settings.validation_workers
        self._pool: ProcessPoolExecutor | None = None
        self._start_pool()

    def _start_pool(self) -> None:
        if self.workers > 0:
            # spawn, not fork: the parent runs threads (Kafka clients, the SQL pool).
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init, initargs=(self.settings.facilities_file,
                                             self.settings.hub_key_path))

    def reload(self) -> None:
        """The registry changed: workers re-read it (in-flight work finishes first)."""
        if self._pool is not None:
            old, self._pool = self._pool, None
            old.shutdown(wait=True)
            self._start_pool()

    async def plan_body(self, facility: Facility, body: bytes,
                        resolutions: dict[int, Resolution] | None = None) -> BodyPlan:
        """``resolutions``: the shared record's answers to the entries' conditions."""
        if self._pool is None:
            return plan_body(facility, body, self.directory, resolutions)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _plan, facility.id, body,
                                          resolutions or {})

    async def check_inbound(self, records: list[InboundRecord]) -> list[Verdict]:
        if self._pool is None:
            # In slices, letting the event loop run in between: the batch before is waiting
            # on the broker's acks and on SQL in a thread, and goes on as they come.
            out: list[Verdict] = []
            for i in range(0, len(records), INLINE_SLICE):
                if i:
                    await asyncio.sleep(0)
                out += check_inbound_many(self.directory, records[i:i + INLINE_SLICE])
            return out
        loop = asyncio.get_running_loop()
        size = max(1, -(-len(records) // self.workers))
        parts = await asyncio.gather(*(
            loop.run_in_executor(self._pool, _check, records[i:i + size])
            for i in range(0, len(records), size)))
        return [v for part in parts for v in part]

    async def warm_up(self) -> None:
        """Start the worker processes now, not on the first batch (each reads the registry
        and the hub key as it starts)."""
        if self._pool is None:
            return
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _check, [])
                               for _ in range(self.workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
