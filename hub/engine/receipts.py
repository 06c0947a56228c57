"""Receipts: the hub tells a facility's Kafka clients what became of their inbound events.

A facility that publishes to ``hie.inbound.v1`` (the SDK, ``hub mllp``) gets the broker's
acknowledgement, which with the bundled broker (memory only) is not yet durable: the event
is kept for good once the SQL journal has committed it. So the hub answers on
``hie.receipts.v1``, keyed by facility id (one partition per facility, Kafka's default
partitioner): one record per journal commit and facility, ``{"journaled": [event ids]}``,
and one per refused batch, ``{"refused": {event id: reason}}``. The SDK keeps an event in its
outbox until a receipt names it; ``hub mllp`` answers ``AA`` only then.

Receipts are sent after the commit, not in its transaction (that would slow the journal, the
one writer everything waits for). A receipt lost in a crash is made good by the sender: an
event without a receipt is sent again, and the ingest stage answers a copy of an event the
journal already holds (same id, same signature) with a receipt, not a second append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka.partitioner import murmur2

from hub.config import Settings
from hub.deadletters.letter import DeadLetter
from hub.engine.projection import Event
from hub.engine.waiters import IdWaiters
from hub.errors import HubError
from hub.log.producer import Publisher
from hub.signing import key_owner

log = logging.getLogger(__name__)

CONTENT_TYPE = b"application/vnd.hie.receipt+json"
SOURCE_PREFIX = "urn:hie:facility:"


@dataclass(frozen=True, slots=True)
class Receipt:
    facility: str
    journaled: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)

    def record(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        body: dict = {"facility": self.facility}
        if self.journaled:
            body["journaled"] = list(self.journaled)
        if self.refused:
            body["refused"] = dict(self.refused)
        return (self.facility.encode(), orjson.dumps(body),
                [("content-type", CONTENT_TYPE)])


def parse_receipt(value: bytes | None) -> Receipt | None:
    """A receipt from a record's value; None for anything else (never raises)."""
    try:
        body = orjson.loads(value or b"")
        journaled = tuple(str(i) for i in body.get("journaled", ()))
        refused = {str(k): str(v) for k, v in dict(body.get("refused", {})).items()}
        return Receipt(str(body["facility"]), journaled, refused)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def signed_by_facility(event: Event) -> str | None:
    """The facility that signed ``event`` itself (it came through ``hie.inbound.v1``), or
    None for events the hub signed (gateway, API, registry, patient index)."""
    if not event.signature or not event.source.startswith(SOURCE_PREFIX):
        return None
    facility = event.source[len(SOURCE_PREFIX):]
    for part in event.signature.split(";"):
        if part.startswith("kid="):
            return facility if key_owner(part[4:]) == facility else None
    return None


def journaled_receipts(events: Iterable[Event]) -> list[Receipt]:
    by_facility: dict[str, list[str]] = defaultdict(list)
    for e in events:
        facility = signed_by_facility(e)
        if facility is not None:
            by_facility[facility].append(e.id)
    return [Receipt(f, tuple(ids)) for f, ids in by_facility.items()]


class ReceiptSender:
    """Publishes receipts in the order they were made, off the caller's path."""

    def __init__(self, publisher: Publisher, topic: str, max_queued: int = 10_000) -> None:
        self.publisher = publisher
        self.topic = topic
        self._queue: asyncio.Queue[list[Receipt]] = asyncio.Queue(max_queued)
        self._task: asyncio.Task | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="receipts")

    async def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued for at most ``timeout`` s (a lost receipt only costs the
        facility a resend), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def journaled(self, events: Sequence[Event], _at: float = 0.0) -> None:
        """``on_commit`` of the journal's runner."""
        self.send(journaled_receipts(events))

    def send(self, receipts: list[Receipt]) -> None:
        if not receipts or self._task is None:
            return
        try:
            self._queue.put_nowait(receipts)
        except asyncio.QueueFull:  # the broker is away for long: the senders will resend
            self.dropped += len(receipts)

    async def _run(self) -> None:
        while True:
            receipts = await self._queue.get()
            try:
                await self.publisher.publish_raw(self.topic, [r.record() for r in receipts])
                self.sent += len(receipts)
            except HubError as exc:
                self.dropped += len(receipts)
                log.warning("could not send %d receipt(s) to %s (%s); the facilities will "
                            "send those events again and be answered then", len(receipts),
                            self.topic, exc)
            finally:
                self._queue.task_done()


def refusal_receipts(letters: Iterable[DeadLetter]) -> list[Receipt]:
    """Receipts for refused inbound records that name a facility and an event id (a record
    too broken to name them has no one to tell; it is in the dead letters all the same)."""
    by_facility: dict[str, dict[str, str]] = defaultdict(dict)
    for letter in letters:
        if letter.facility and letter.event_id:
            reason = f"{letter.reason}: {letter.detail}" if letter.detail else letter.reason
            by_facility[letter.facility][letter.event_id] = reason[:500]
    return [Receipt(f, (), refused) for f, refused in by_facility.items()]


class ReceiptWaiter(IdWaiters[str | None]):
    """The sending side, for a process without the hub's store (``hub mllp``): wait until the
    hub's receipts name every event of a message.

    Same contract as ``JournalAcks``: ``expect(ids)`` before publishing, then ``wait``. It
    reads the facility's receipt partition from its end when it starts, so it must start
    before the first publish; after a broker outage it reads the new log from its end (a
    receipt missed meanwhile makes that message's wait time out: not acknowledged, resend).
    """

    def __init__(self, settings: Settings, facility: str) -> None:
        super().__init__()
        self.settings = settings
        self.facility = facility
        self._ready = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="receipt-waiter")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait(self, ids: Sequence[str], timeout: float) -> dict[str, str] | None:
        """Refusal reasons by event id ({} when every one is journaled), or None when not
        every receipt came within ``timeout``."""
        futs = [f for i in ids if (f := self._waiting.get(i)) is not None]
        try:
            if futs:
                await asyncio.wait(futs, timeout=timeout)
            if not all(f.done() and not f.cancelled() for f in futs):
                return None
            return {i: why for i in ids
                    if (f := self._waiting.get(i)) is not None and (why := f.result())}
        finally:
            self.forget(ids)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        from hub.log.topics import log_identity

        topic = self.settings.topics.receipts
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap,
                                        group_id=None, enable_auto_commit=False,
                                        client_id=f"receipts-{self.facility}")
            try:
                _, partitions = await asyncio.to_thread(log_identity, self.settings, topic)
                await consumer.start()
                tp = TopicPartition(topic, receipt_partition(self.facility, partitions))
                consumer.assign([tp])
                await consumer.seek_to_end(tp)
                await consumer.position(tp)  # resolve "the end" now, before any publish
                self._ready.set()
                while True:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    for rec in batch.get(tp, []):
                        self._settle(parse_receipt(rec.value))
            except (KafkaError, HubError, OSError) as exc:
                log.warning("receipts: cannot read %s (%s); looking again in 1 s", topic, exc)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(1.0)

    def _settle(self, receipt: Receipt | None) -> None:
        if receipt is None or receipt.facility != self.facility:
            return
        for i in receipt.journaled:
            self.resolve(i, None)
        for i, why in receipt.refused.items():
            # ``replayed`` means another copy is in the hub's hands: its receipt will come.
            if not why.startswith("replayed"):
                self.resolve(i, why)


def receipt_partition(facility: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every client computes it for the key."""
    return (murmur2(facility.encode()) & 0x7FFFFFFF) % partitions
