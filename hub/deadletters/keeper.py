"""Keeping the gateway's dead letters: the SQL row before the answer, the topic after it.

Contract of :meth:`DeadLetterKeeper.keep`, in order:

1. The letters join the waiting group. One writer task commits everything waiting in one
   transaction (group commit): fifty clients refused at once cost a few commits, not fifty,
   and no letter waits for more than the commit in progress plus its own.
2. ``keep`` returns once its letters are committed, or raises the error that stopped the
   transaction (:class:`hub.errors.StoreError`): the caller answers 503, the refusal could
   not be recorded. Nothing of a failed group is published.
3. Committed letters are then published to ``hie.deadletter.v1`` and marked ``published``
   by a second task, so a broker outage never delays an answer. If publishing fails the rows
   stay ``published = false`` (logged and counted): kept, only missing from the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hub.deadletters import store as sql
from hub.deadletters.letter import DeadLetter
from hub.errors import BrokerError, StoreError
from hub.log.producer import Publisher
from hub.metrics import DEADLETTERS_UNPUBLISHED
from hub.store.db import Store

log = logging.getLogger(__name__)

_Waiting = tuple[list[DeadLetter], asyncio.Future]


class DeadLetterKeeper:
    def __init__(self, store: Store, publisher: Publisher, topic: str, path: str = "gateway",
                 group_bytes: int = 32 * 1024 * 1024) -> None:
        self.store = store
        self.publisher = publisher
        self.topic = topic
        self.path = path
        self.group_bytes = group_bytes  # bodies go up to the request limit: bound a commit
        self._waiting: list[_Waiting] = []
        self._unpublished: list[DeadLetter] = []
        self._writer: asyncio.Task | None = None
        self._feeder: asyncio.Task | None = None

    async def keep(self, letters: list[DeadLetter]) -> None:
        """Return once ``letters`` are committed to SQL; raise if they could not be."""
        if not letters:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((letters, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="deadletters:write")
        await done

    def _take(self) -> list[_Waiting]:
        size, n = 0, 0
        for letters, _ in self._waiting:
            size += sum(len(x.original) for x in letters)
            n += 1
            if size >= self.group_bytes:
                break
        group, self._waiting = self._waiting[:n], self._waiting[n:]
        return group

    async def _write(self) -> None:
        while self._waiting:
            group = self._take()
            letters = [x for batch, _ in group for x in batch]
            try:
                await asyncio.to_thread(sql.keep, self.store, letters)
            except Exception as exc:  # every waiter learns why; none is left hanging
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)
            self._unpublished.extend(letters)
            if self._feeder is None or self._feeder.done():
                self._feeder = asyncio.create_task(self._feed(), name="deadletters:feed")

    async def _feed(self) -> None:
        while self._unpublished:
            batch, self._unpublished = self._unpublished, []
            try:
                await self.publisher.publish_raw(self.topic, [x.record() for x in batch])
            except BrokerError as exc:
                DEADLETTERS_UNPUBLISHED.labels(self.path).inc(len(batch))
                log.warning("%d dead letter(s) are kept in SQL but not on %s: %s",
                            len(batch), self.topic, exc)
                continue
            try:
                await asyncio.to_thread(sql.mark_published, self.store, [x.id for x in batch])
            except StoreError as exc:  # only the flag is stale; the letters are kept
                log.warning("could not mark %d dead letter(s) published: %s", len(batch), exc)

    async def close(self, timeout: float = 30.0) -> None:
        """Wait for the commits and publishes under way (drain)."""
        await _drain(self._writer, timeout)
        await _drain(self._feeder, timeout)  # read after the writer: it may have started one


async def _drain(task: asyncio.Task | None, timeout: float) -> None:
    if task is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), timeout)
