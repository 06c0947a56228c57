"""Publishing envelopes: a micro-batching publisher; a call returns once Kafka acknowledged.

Why micro-batching: every gateway request used to build and send its own batch per
partition. aiokafka keeps at most one undrained batch per partition, so concurrent requests
queued in ``MessageAccumulator.add_batch``, whose timeout (aiokafka 0.14) is reduced by the
time elapsed since a *fixed* start on every loop and so collapses when many requests wait on
one partition: ``KafkaTimeoutError`` under load, and a produce request carried the records
of about one HTTP request. Here callers only enqueue their records; one task per publisher
takes everything waiting (bounded by size), builds ONE batch per partition and hands it to
aiokafka. That task is the accumulator's only writer, so the timeout bug cannot bite, and a
produce request carries whatever arrived while the previous one was on the wire.

Why a short deadline and a broker probe: an HTTP client should learn within a couple of
seconds that the log is unavailable (503, retry later), not wait for aiokafka's retries. A
call therefore completes or raises BrokerError within ``publish_timeout_s``; and when a call
stalls or a batch fails, the publisher checks whether any broker accepts a TCP connection.
If none does, it fails everything waiting at once and refuses new calls immediately, until
a probe (every quarter second) finds a broker again; aiokafka then reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from hub import clock
from hub.config import Settings
from hub.envelope import Envelope
from hub.errors import BrokerError
from hub.log.topics import log_identity

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]

# One produce batch per partition and round. Apache Kafka refuses batches over
# message.max.bytes (1 MiB by default); a single larger record still gets a batch of its own.
BATCH_BYTES = 256 * 1024
PROBE_AFTER_S = 0.3  # a call unanswered this long makes the publisher check the broker
PROBE_EVERY_S = 0.25  # while the broker is unreachable: how often to look for it again
PROBE_CONNECT_S = 0.5


class CachedPartitioner:
    """Kafka's default partitioner (murmur2, as Java clients use) with a cache per key.

    aiokafka's murmur2 is pure Python; one patient key recurs across that patient's events,
    so remembering the answer takes the hash off the gateway's hot path.
    """

    def __init__(self, size: int = 65536) -> None:
        self._default = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}
        self._size = size

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]
                 ) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        k = (key, len(all_partitions))
        found = self._cache.get(k)
        if found is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            found = self._cache[k] = self._default(key, all_partitions, available)
        return found


@dataclass
class PublisherStats:
    """Counters for tests, benchmarks and logs."""

    calls: int = 0  # publish calls with at least one record
    records: int = 0
    rounds: int = 0  # times the background task drained the queue
    batches: int = 0  # produce batches handed to aiokafka (one per partition and round)
    acknowledged: int = 0  # calls completed
    failed: int = 0  # calls that raised BrokerError (including the fast failures)
    fast_failures: int = 0  # calls refused at once because the broker was unreachable


@dataclass(eq=False)
class _Call:
    """One publish call: its records, how many are in batches, how many batches are out."""

    topic: str
    records: Sequence[Record]
    stamp: int  # Kafka timestamp (ms) for all its records, from the hub's clock
    future: asyncio.Future[None]
    progress: float  # monotonic time of its start or of its last acknowledged batch
    placed: int = 0  # records[:placed] are in batches
    unacked: int = 0  # its batches that aiokafka has not confirmed yet


@dataclass
class _Batch:
    builder: object  # aiokafka BatchBuilder
    calls: list[_Call] = field(default_factory=list)


class Publisher:
    """One aiokafka producer shared by a process (acks=all; idempotence per settings).

    Public API: ``start``, ``stop``, ``publish``, ``publish_raw``; ``stats`` for counters.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = PublisherStats()
        self._timeout = settings.publish_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = CachedPartitioner()
        self._queue: deque[_Call] = deque()
        self._waiting: set[_Call] = set()  # calls not answered yet (queued or in batches)
        self._wakeup = asyncio.Event()
        self._suspect = asyncio.Event()  # a batch failed: check the broker now
        self._down: str | None = None  # why the broker is considered unreachable
        self._closing = False
        self._tasks: list[asyncio.Task] = []

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> Publisher:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=self.settings.enable_idempotence,
            # We batch ourselves; lingering would only add latency to every round.
            linger_ms=0,
            max_batch_size=BATCH_BYTES,
            max_request_size=16 * 1024 * 1024,
            # Bounds a produce request, a metadata wait and how long an unsent batch is kept;
            # callers stop waiting after publish_timeout_s anyway.
            request_timeout_ms=max(1000, int(self._timeout * 1000)),
            client_id="hub",
            partitioner=self._partitioner,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            producer, self._producer = self._producer, None
            with contextlib.suppress(KafkaError, OSError, RuntimeError):  # holds a connection try
                await producer.stop()
            raise BrokerError(
                f"no Kafka broker answered the producer at {self.settings.bootstrap} ({exc}); "
                "is it running, and is --kafka / HUB_KAFKA_BOOTSTRAP right?") from exc
        # Metadata for the main topic now, so the first requests after a start do not all
        # wait for it (best effort: a tool's settings may name topics that do not exist).
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(self._producer.partitions_for(self.settings.topics.events),
                                   self._timeout)
        self._closing = False
        self._tasks = [asyncio.create_task(self._flush_loop(), name="publisher-flush"),
                       asyncio.create_task(self._watch_broker(), name="publisher-watch")]
        return self

    async def stop(self) -> None:
        """Send what is queued (for at most ``publish_timeout_s``), fail the rest, close."""
        if self._producer is None:
            return
        self._closing = True
        deadline = time.monotonic() + self._timeout
        while self._waiting and self._down is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._fail_all("the publisher stopped before the broker acknowledged")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        producer, self._producer = self._producer, None
        try:
            # aiokafka waits for batches still out; an unreachable broker must not hold us.
            await asyncio.wait_for(producer.stop(), self._timeout + 1)
        except (TimeoutError, KafkaError) as exc:
            log.warning("producer did not stop cleanly: %r", exc)

    # --- publishing -------------------------------------------------------------------

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        """Publish envelopes and wait until every one is acknowledged.

        Raises BrokerError if any of them is not; some of the others may then be in the log,
        which is safe because consumers drop events whose id they already applied.
        """
        await self.publish_raw(
            topic, [(e.key.encode(), e.data, e.headers()) for e in envelopes]
        )

    async def publish_raw(self, topic: str, records: Sequence[Record]) -> None:
        """Publish (key, value, headers) records and wait until all are acknowledged.

        Records with the same key go to the same partition, in call order (also across
        calls, in the order the calls were made). Raises BrokerError within
        ``publish_timeout_s`` of the call or of its last acknowledged batch (a call too
        large for one round of batches keeps going while the broker makes progress on it).
        """
        if not records:
            return
        if self._producer is None or self._closing:
            raise BrokerError("publisher is not started")
        self.stats.calls += 1
        self.stats.records += len(records)
        if self._down is not None:
            self.stats.fast_failures += 1
            self.stats.failed += 1
            raise BrokerError(f"publishing to {topic} failed: {self._down}")
        loop = asyncio.get_running_loop()
        call = _Call(topic, records, int(clock.now().timestamp() * 1000), loop.create_future(),
                     time.monotonic())
        self._queue.append(call)
        self._waiting.add(call)
        self._wakeup.set()
        try:
            while not call.future.done():
                left = call.progress + self._timeout - time.monotonic()
                if left <= 0:
                    raise BrokerError(f"publishing to {topic} failed: no acknowledgement from "
                                      f"the broker within {self._timeout:g} s")
                await asyncio.wait((call.future,), timeout=left)
            call.future.result()  # raises the BrokerError it failed with
            self.stats.acknowledged += 1
        except BrokerError:
            self.stats.failed += 1
            raise
        finally:
            # A caller that gave up (deadline, cancelled request) leaves nothing behind: its
            # records not yet in a batch are dropped, and its future is settled.
            self._waiting.discard(call)
            if not call.future.done():
                call.future.cancel()

    # --- the background task ------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                try:
                    await self._send_round()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must not leave callers waiting forever
                    log.exception("publisher round failed")
                    self._fail_all(f"publisher error: {exc!r}")

    async def _partitions(self, topic: str) -> list[int]:
        assert self._producer is not None
        known = self._producer.client.cluster.partitions_for_topic(topic)
        if not known:
            known = await asyncio.wait_for(self._producer.partitions_for(topic), self._timeout)
        return sorted(known)

    async def _send_round(self) -> None:
        """Put everything waiting (up to one batch per partition) into batches and send them.

        Calls are taken in order and each call's records in order, so records of one key
        keep their order; a call that does not fit continues in the next round.
        """
        producer = self._producer
        assert producer is not None
        batches: dict[tuple[str, int], _Batch] = {}
        full = False
        while self._queue and not full:
            call = self._queue[0]
            if call.future.done():  # abandoned or failed while queued
                self._queue.popleft()
                continue
            try:
                partitions = await self._partitions(call.topic)
            except (KafkaError, TimeoutError) as exc:
                self._queue.popleft()
                self._fail(call, f"no metadata for {call.topic}: {exc!r}")
                continue
            if call.future.done() or not self._queue or self._queue[0] is not call:
                continue  # settled while we waited for metadata
            records = call.records
            while call.placed < len(records):
                key, value, headers = records[call.placed]
                p = self._partitioner(key, partitions, partitions)
                batch = batches.get((call.topic, p))
                if batch is None:
                    batch = batches[(call.topic, p)] = _Batch(producer.create_batch())
                if batch.builder.append(key=key, value=value, timestamp=call.stamp,
                                        headers=headers) is None:
                    full = True  # this partition's batch is full: the rest waits a round
                    break
                if not batch.calls or batch.calls[-1] is not call:
                    batch.calls.append(call)
                    call.unacked += 1
                call.placed += 1
            if not full:
                self._queue.popleft()
        if not batches:
            return
        self.stats.rounds += 1
        for (topic, p), batch in batches.items():
            batch.builder.close()
            try:
                # Waits only while this partition's previous batch is not yet on the wire;
                # we are the only writer, so aiokafka's timeout here is the plain one.
                sent = await producer.send_batch(batch.builder, topic, partition=p)
            except KafkaError as exc:
                self._batch_failed(batch.calls, exc)
                continue
            self.stats.batches += 1
            sent.add_done_callback(lambda fut, calls=batch.calls: self._batch_done(fut, calls))

    def _batch_done(self, fut: asyncio.Future, calls: list[_Call]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self._batch_failed(calls, exc or KafkaError("batch cancelled"))
            return
        now = time.monotonic()
        for call in calls:
            call.unacked -= 1
            call.progress = now
            if call.unacked == 0 and call.placed == len(call.records) \
                    and not call.future.done():
                call.future.set_result(None)

    def _batch_failed(self, calls: list[_Call], exc: BaseException) -> None:
        self._suspect.set()
        for call in calls:
            self._fail(call, f"publishing to {call.topic} failed: {exc!r}")

    def _fail(self, call: _Call, reason: str) -> None:
        if not call.future.done():
            call.future.set_exception(BrokerError(reason))

    def _fail_all(self, reason: str) -> None:
        for call in list(self._waiting):
            self._fail(call, f"publishing to {call.topic} failed: {reason}")
        self._queue.clear()

    # --- is the broker there? ----------------------------------------------------------

    async def _watch_broker(self) -> None:
        """Probe the broker when calls stall or batches fail, and while it is unreachable."""
        while True:
            if self._down is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._suspect.wait(), PROBE_AFTER_S / 3)
                stalled = any(time.monotonic() - c.progress > PROBE_AFTER_S
                              for c in self._waiting)
                if not (self._suspect.is_set() or stalled):
                    continue
            else:
                await asyncio.sleep(PROBE_EVERY_S)
            self._suspect.clear()
            reachable = await self._probe()
            if reachable and self._down is not None:
                # A broker back from a restart may have lost its log: make the hub's topics
                # again first, or the first publish would let it auto-create the events topic
                # with its own default partition count.
                try:
                    await asyncio.to_thread(log_identity, self.settings,
                                            self.settings.topics.events, 3.0)
                except (BrokerError, KafkaError, OSError) as exc:
                    log.warning("broker at %s answers, but its topics are not ready: %s",
                                self.settings.bootstrap, exc)
                    continue
                log.warning("broker at %s is reachable again", self.settings.bootstrap)
                self._down = None
            elif not reachable and self._down is None:
                self._down = f"no Kafka broker accepts connections at {self._targets_text()}"
                log.warning("%s; failing publish calls until one does", self._down)
                self._fail_all(self._down)

    def _targets(self) -> set[tuple[str, int]]:
        found = set()
        for hostport in self.settings.bootstrap.split(","):
            host, _, port = hostport.strip().rpartition(":")
            if host and port.isdigit():
                found.add((host.strip("[]"), int(port)))
        if self._producer is not None:
            for broker in self._producer.client.cluster.brokers():
                found.add((broker.host, broker.port))
        return found

    def _targets_text(self) -> str:
        return ", ".join(sorted(f"{h}:{p}" for h, p in self._targets()))

    async def reachable(self) -> bool:
        """Whether a broker accepts connections now (for readiness; a TCP connect each)."""
        return await self._probe()

    async def _probe(self) -> bool:
        """Whether any known broker accepts a TCP connection (a refused one fails at once)."""

        async def connect(host: str, port: int) -> bool:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                   PROBE_CONNECT_S)
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True

        results = await asyncio.gather(*(connect(h, p) for h, p in self._targets()))
        return any(results)
