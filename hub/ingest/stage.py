"""The ingest stage: ``hie.inbound.v1`` -> verify and validate -> ``hie.events.v1``.

Facilities that publish straight to Kafka write signed envelopes to the inbound topic; only
what passes the same checks as the HTTP gateway is appended to the events topic, the rest is
dead-lettered with an OperationOutcome. Per batch, in order: check every record, publish the
valid ones and the dead letters and wait for the broker's acks, commit the dead letters to
SQL, then commit the inbound offsets. A crash before that commit re-reads the batch and
appends some events twice, with the same event ids, which every consumer of the log skips
(exactly-once effect); a dead letter's id is derived from its inbound record, so its SQL row
is written once however often the record is handled. An event id already let in from a
*different* inbound record is a replay and is dead-lettered (``hub.ingest.replay``).

The next batch is read and checked while this one is published and committed: on the
validation worker processes if there are any, else inline, in slices between which this
batch's steps go on as the broker's acks and the SQL thread's answers come back. The steps
after the check still run one batch at a time, in order, and each batch commits its own
offsets (never those of a batch read ahead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from hub.config import Settings
from hub.deadletters import store as dead_letters
from hub.deadletters.letter import DeadLetter, Record, refuse_record
from hub.engine.faults import crashpoint
from hub.engine.outage import LOG_CHECK_SECONDS, NewLog, Outage, close_consumer
from hub.engine.receipts import Receipt, ReceiptSender, refusal_receipts
from hub.envelope import header_value
from hub.facilities import FacilityDirectory
from hub.fhir import Issue
from hub.ingest.checks import EdgeChecks
from hub.ingest.replay import replays
from hub.ingest.verdict import Verdict
from hub.log.producer import Publisher
from hub.log.topics import log_identity
from hub.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED, INBOUND_DUPLICATES
from hub.store.db import Store

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    accepted: int = 0
    rejected: int = 0
    first_batch_at: float = 0.0  # perf_counter() when work began and last ended: the
    last_batch_at: float = 0.0   # benchmark's busy window, free of group-join waits


class IngestStage:
    def __init__(self, settings: Settings, directory: FacilityDirectory, publisher: Publisher,
                 store: Store, checks: EdgeChecks | None = None,
                 receipts: ReceiptSender | None = None) -> None:
        self.settings = settings
        self.receipts = receipts
        self.store = store
        self._topic_id = ""
        self.directory = directory
        self.publisher = publisher
        self.checks = checks or EdgeChecks(settings.model_copy(
            update={"validation_workers": 0}), directory)
        self.stats = IngestStats()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, until_caught_up: bool = False) -> IngestStats:
        """Consume until stop() (or, with ``until_caught_up``, the end of the inbound log).

        A broker outage or restart, a failed commit or a rebalance ends only the current
        consumer: after a pause a new one resumes from the committed offsets (a restarted
        bundled broker forgot them with its log, so the new log is read from its start)."""
        outage = Outage(log, "ingest stage", self._stop)
        await outage.keep_running(lambda: self._session(until_caught_up, outage))
        return self.stats

    async def _session(self, until_caught_up: bool, outage: Outage) -> bool:
        t = self.settings.topics
        self._topic_id, partitions = await asyncio.to_thread(
            log_identity, self.settings, t.inbound)
        finishing: asyncio.Future | None = None  # the batch before, publishing, committing
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.group_prefix}.ingest", client_id="hub-ingest",
            enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(500, self.settings.session_timeout_ms // 5))
        try:
            await consumer.start()
            if self.settings.consumer_groups:
                consumer.subscribe([t.inbound])
            else:  # alone: read every partition from the group's committed offsets, no join
                assigned = [TopicPartition(t.inbound, p) for p in range(partitions)]
                consumer.assign(assigned)
                committed = {tp: await consumer.committed(tp) for tp in assigned}
                starts = await consumer.beginning_offsets(assigned)
                for tp in assigned:
                    consumer.seek(tp, committed[tp] if committed[tp] is not None
                                  else starts[tp])
            check_at = time.monotonic() + LOG_CHECK_SECONDS
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200,
                                               max_records=self.settings.batch_max_records)
                if batch:
                    self.stats.first_batch_at = self.stats.first_batch_at or time.perf_counter()
                    flat = [(tp, m) for tp, msgs in batch.items() for m in msgs]
                    # This batch is checked while the batch before is published and
                    # committed; one batch at a time is.
                    checking = asyncio.ensure_future(self._check(flat))
                    try:
                        if finishing is not None:
                            await finishing
                            finishing = None
                        verdicts = await checking
                    finally:
                        if not checking.done():
                            checking.cancel()
                    finishing = asyncio.ensure_future(self._finish(consumer, flat, verdicts))
                    outage.recovered()
                elif finishing is not None:
                    await finishing
                    finishing = None
                elif until_caught_up and consumer.assignment():
                    ends = await consumer.end_offsets(list(consumer.assignment()))
                    positions = [await consumer.position(tp) for tp in ends]
                    if all(p >= ends[tp] for tp, p in zip(ends, positions, strict=True)):
                        return True
                if time.monotonic() >= check_at:
                    topic_id, _ = await asyncio.to_thread(
                        log_identity, self.settings, t.inbound, 3.0, LOG_CHECK_SECONDS / 2)
                    if topic_id != self._topic_id:
                        raise NewLog(f"{t.inbound} is a new log (topic id {self._topic_id} "
                                     f"-> {topic_id})")
                    outage.recovered()
                    check_at = time.monotonic() + LOG_CHECK_SECONDS
            if finishing is not None:
                await finishing
            return False
        finally:
            if finishing is not None and not finishing.done():
                # Leaving (an outage, a cancel): the batch is read again if its offsets
                # were not committed, and its events carry the same ids.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await finishing
            await close_consumer(consumer)

    async def _check(self, flat: list[tuple[TopicPartition, ConsumerRecord]]
                     ) -> list[Verdict]:
        return await self.checks.check_inbound([(m.headers, m.key, m.value, m.timestamp)
                                                for _, m in flat])

    async def _finish(self, consumer: AIOKafkaConsumer,
                      flat: list[tuple[TopicPartition, ConsumerRecord]],
                      verdicts: list[Verdict]) -> None:
        """Publish a checked batch, keep its refusals, then commit its offsets."""
        await self._handle(flat, verdicts)
        crashpoint(self.settings.crash_at, "ingest_before_commit")
        # This batch's offsets, not the consumer's position: the next batch may have been
        # read already. A CommitFailedError (rebalance, broker restart) ends this consumer;
        # the next one reads the batch again and its events carry the same ids.
        ends: dict[TopicPartition, int] = {}
        for tp, m in flat:
            ends[tp] = max(ends.get(tp, 0), m.offset + 1)
        await consumer.commit(ends)
        self.stats.last_batch_at = time.perf_counter()

    async def _handle(self, flat: list[tuple[TopicPartition, ConsumerRecord]],
                      verdicts: list[Verdict]) -> None:
        good: list[Record] = []
        bad: list[DeadLetter] = []
        duplicates: dict[str, list[str]] = {}  # facility -> event ids already journaled
        accepted: Counter[str] = Counter()  # facility -> events (the metrics, once a batch)
        rejected: Counter[str] = Counter()  # reason -> records
        admitted = [i for i, v in enumerate(verdicts) if v.facility is not None]
        claims = [(verdicts[i].event_id, self._topic_id, flat[i][0].partition,
                   flat[i][1].offset) for i in admitted]
        found = await asyncio.to_thread(
            replays, self.store, claims,
            [header_value(flat[i][1].headers, "ce_signature") for i in admitted])
        replayed = {admitted[i] for i in found.replays}
        duplicate = {admitted[i] for i in found.duplicates}
        for n, ((tp, m), v) in enumerate(zip(flat, verdicts, strict=True)):
            if n in duplicate:
                assert v.facility is not None and v.event_id is not None
                duplicates.setdefault(v.facility, []).append(v.event_id)
                INBOUND_DUPLICATES.inc()
                continue
            if n in replayed:
                v = Verdict(None, "replayed", (Issue(
                    "ce_id", f"event id {v.event_id!r} was already accepted from another "
                    "inbound record: a replay (use a new id for a new event)", "duplicate"),),
                    v.event_id)
            if v.facility is not None:
                good.append((m.key, m.value or b"", list(m.headers)))
                accepted[v.facility] += 1
            else:
                bad.append(self._letter(tp, m, v))
                rejected[v.reason] += 1
        t = self.settings.topics
        await asyncio.gather(self.publisher.publish_raw(t.events, good),
                             self.publisher.publish_raw(t.deadletter,
                                                        [x.record() for x in bad]))
        for facility, n in accepted.items():
            EVENTS_ACCEPTED.labels("inbound", facility).inc(n)
        for reason, n in rejected.items():
            EVENTS_REJECTED.labels("inbound", reason).inc(n)
        if bad:
            # Before the offsets are committed: a crash in between handles the batch again,
            # and the ids derived from the inbound records make the second insert a no-op.
            await asyncio.to_thread(dead_letters.keep, self.store, bad, True)
        if self.receipts is not None:
            # After the dead letters are kept: a refusal receipt is a promise it is recorded.
            self.receipts.send(refusal_receipts(bad) + [
                Receipt(f, tuple(ids)) for f, ids in duplicates.items()])
        self.stats.accepted += len(good)
        self.stats.rejected += len(bad)

    def _letter(self, tp: TopicPartition, m: ConsumerRecord, v: Verdict) -> DeadLetter:
        return refuse_record("ingest", v.reason, v.issues, "inbound", tp.topic, self._topic_id,
                             tp.partition, m.offset, m.key, m.value, m.headers)

