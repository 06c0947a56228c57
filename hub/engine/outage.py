"""Riding out a broker or database outage: what counts as one, log once, back off.

A long-running component (projection runner, ingest stage, relay) never exits because the
broker restarted, a rebalance failed a commit or the database went away: it logs the outage
once, waits with a growing pause (cut short by stop()), rebuilds its consumer and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from kafka.errors import KafkaError as SyncKafkaError

from hub.errors import BrokerError, StoreError

try:  # aiokafka's errors are kafka-python's in older versions, its own in newer ones
    from aiokafka.errors import KafkaError as AsyncKafkaError
except ImportError:  # pragma: no cover
    AsyncKafkaError = SyncKafkaError

# How often a running consumer asks the broker which log it holds (restart, outage).
LOG_CHECK_SECONDS = 2.0


class NewLog(BrokerError):
    """The topic was re-created (a new topic id): start a consumer on the new log."""


# Errors that say "the infrastructure is away or changed", not "this event is bad".
TRANSIENT: tuple[type[BaseException], ...] = (
    AsyncKafkaError, SyncKafkaError, BrokerError, StoreError, sa.exc.SQLAlchemyError,
    OSError, TimeoutError, ConnectionError)


def store_away(exc: BaseException) -> bool:
    """Whether a store error is the database being unreachable, locked or read-only (to be
    waited out) rather than something about the data (to be retried, then dead-lettered)."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
        return True
    return isinstance(cause, (sa.exc.OperationalError, sa.exc.InterfaceError,
                              sa.exc.TimeoutError))


class Outage:
    """Log an outage once, back off between attempts, log the recovery."""

    def __init__(self, logger: logging.Logger, what: str, stop: asyncio.Event,
                 first: float = 0.5, most: float = 5.0) -> None:
        self.log = logger
        self.what = what
        self.stop = stop
        self.first = first
        self.most = most
        self.since: float | None = None
        self.reason = ""
        self._pause = first

    @property
    def active(self) -> bool:
        return self.since is not None

    async def keep_running(self, session: Callable[[], Awaitable[bool]]) -> None:
        """Run ``session`` again and again until it reports done or stop() is called: an
        outage ends only the session it happened in, never the component."""
        while not self.stop.is_set():
            try:
                if await session():
                    return
            except TRANSIENT as exc:
                await self.failed(exc)

    async def failed(self, exc: BaseException) -> None:
        """Note a failure and pause (returns early on stop())."""
        loop = asyncio.get_running_loop()
        if self.since is None:
            self.since = loop.time()
            self.reason = f"{type(exc).__name__}: {exc}"
            self.log.warning("%s: %s; will reconnect and resume (logged once per outage)",
                             self.what, self.reason)
        else:
            self.log.debug("%s: still failing: %s", self.what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self._pause)
        self._pause = min(self._pause * 2, self.most)

    def recovered(self) -> None:
        if self.since is not None:
            took = asyncio.get_running_loop().time() - self.since
            self.log.warning("%s: resumed after %.1f s (%s)", self.what, took, self.reason)
        self.since = None
        self.reason = ""
        self._pause = self.first


async def close_consumer(consumer: AIOKafkaConsumer, timeout: float = 5.0) -> None:
    """Stop a consumer without hanging on a broker that is gone (leaving the group and the
    last commit need it); the stored positions, not the group, are what resumes us."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), timeout)
