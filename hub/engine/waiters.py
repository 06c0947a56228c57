"""Futures by event id: "tell me when these events are kept", for the acknowledging side.

Shared by ``JournalAcks`` (the journal's commits, in the hub's process) and
``ReceiptWaiter`` (the hub's receipts, in a facility-side process). The contract: ``expect``
the ids BEFORE publishing (the answer may come before the publisher's caller resumes),
``forget`` them if publishing fails, then wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class IdWaiters(Generic[T]):
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[T]] = {}
        self._task: asyncio.Task | None = None

    def expect(self, ids: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        for i in ids:
            self._waiting.setdefault(i, loop.create_future())

    def forget(self, ids: Iterable[str]) -> None:
        for i in ids:
            fut = self._waiting.pop(i, None)
            if fut is not None:
                fut.cancel()

    def resolve(self, event_id: str, value: T) -> None:
        fut = self._waiting.get(event_id)
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
