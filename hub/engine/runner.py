"""The projection runner: Kafka in, one SQL transaction per batch out.

Contract of one batch (in this order):

1. Decode the records. A record that is not a hub envelope is dead-lettered (acknowledged by
   the broker) before anything else happens.
2. In ONE database transaction: read the projection's fencing epoch and stored positions;
   drop records at or below the stored position (already applied) and events whose id this
   projection already applied; let the projection turn the rest into row changes; write them,
   and the batch's dead letters (ids derived from the records: written once); store the new
   positions. Commit.
3. Commit the Kafka offsets. They are advisory (monitoring, lag); the stored positions are
   the truth, and on partition assignment the consumer seeks to them.

A crash before 2 commits leaves nothing behind and the batch is read again; a crash after it
leaves the positions saying so, and the batch is skipped when read again. So every event is
applied exactly once however often it is delivered.

A batch that fails is retried ``max_retries`` times, then applied event by event; an event
that still fails is dead-lettered with the error in its headers (in SQL in the transaction
that moves the position past it, and on the topic) and the runner moves on. A
store that is down is not the events' fault: then the runner waits and retries, dead-lettering
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from hub.aio import run_loop
from hub.config import Settings
from hub.deadletters import store as dead_letters
from hub.deadletters.letter import DeadLetter, refuse_record
from hub.engine import catchup, tracking
from hub.engine.faults import crashpoint
from hub.engine.outage import (
    LOG_CHECK_SECONDS,
    NewLog,
    Outage,
    close_consumer,
    store_away,
)
from hub.engine.projection import Event, Projection
from hub.engine.rebuild import ensure_built
from hub.engine.writer import write
from hub.envelope import Envelope
from hub.errors import EnvelopeError, StoreError
from hub.fhir import Issue
from hub.log.producer import Publisher
from hub.log.topics import log_identity
from hub.metrics import BATCH_SECONDS, DEADLETTERED, EVENTS_APPLIED, EVENTS_SKIPPED, LAG
from hub.store.db import Store

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Reseek(Exception):
    """The stored positions moved under us (a rebuild swapped tables): seek to them."""


@dataclass
class RunnerStats:
    applied: int = 0
    skipped: int = 0
    refetched: int = 0
    deadlettered: int = 0
    batches: int = 0
    caught_up: bool = False
    last_commit: float = 0.0
    lag: int = 0


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked) -> None:
        return None

    async def on_partitions_assigned(self, assigned) -> None:
        await self.runner._seek_to_stored(assigned)


class ProjectionRunner:
    """Feeds one projection from the events topic with exactly-once effect."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        projection: Projection,
        publisher: Publisher,
        on_commit: Callable[[Sequence[Event], float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.projection = projection
        self.publisher = publisher
        self.on_commit = on_commit
        self.topic = settings.topics.events
        self.consumer_name = f"projection:{projection.name}"
        self.stats = RunnerStats()
        self._stop = asyncio.Event()
        self._epoch = 0
        self._topic_id = ""
        self._next: dict[int, int] = {}
        # A rebalance may land while a batch is being committed; reading the stored positions
        # then would seek back to before that batch. The lock makes the listener wait.
        self._batch_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.tables: dict[str, sa.Table] = {}
        self.dedupe = getattr(projection, "dedupe_by_event_id", True)
        self.rebuildable = getattr(projection, "rebuildable", True)
        self._pool: ThreadPoolExecutor | None = None
        # Set while the runner runs on a loop of its own (run_on_own_loop): that loop, and
        # the loop of the publisher and on_commit.
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._to_commit: dict[int, int] = {}
        self._committer: asyncio.Task | None = None

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run store work on this runner's own thread.

        Not asyncio's shared pool: it has cpu+4 threads, and with ten runners of one process
        waiting there for the write lock, the journal's commit (which acknowledgements wait
        for) queued behind projections nobody waits for."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"runner-{self.projection.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def stop(self) -> None:
        """Ask the runner to finish its current batch and leave (drain)."""
        own = self._own_loop
        if own is not None and not own.is_closed():
            own.call_soon_threadsafe(self._stop.set)
        else:
            self._stop.set()

    async def run_on_own_loop(self, until_caught_up: bool = False) -> RunnerStats:
        """``run`` on an event loop in a thread of its own.

        For the journal: every acknowledgement waits for its commits, and on the process's
        main loop each of its batches waited its turn behind HTTP requests and the other
        runners (about 20 ms a batch at 300 requests/s). The publisher and ``on_commit``
        stay on the calling loop; calls to them are handed over to it."""
        home = asyncio.get_running_loop()

        def body() -> RunnerStats:
            async def main() -> RunnerStats:
                # A restart (the supervisor's) runs on a new loop: asyncio's event and lock
                # belong to the loop they were first used on, so each run gets its own.
                old = self._stop
                self._stop = asyncio.Event()
                self._batch_lock = asyncio.Lock()
                self._own_loop = asyncio.get_running_loop()
                if old.is_set():  # stop() came before this loop could take it
                    self._stop.set()
                return await self.run(until_caught_up)

            self._home = home
            try:
                return run_loop(main())
            finally:
                self._home = self._own_loop = None

        thread = ThreadPoolExecutor(1, thread_name_prefix=f"loop-{self.projection.name}")
        worker = home.run_in_executor(thread, body)
        try:
            return await asyncio.shield(worker)
        except asyncio.CancelledError:
            self.stop()  # the thread would run on: let it finish its batch and leave
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(worker, 10.0)
            raise
        finally:
            thread.shutdown(wait=False)

    @staticmethod
    async def _on(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on ``loop`` (None: the current one)."""
        if loop is None or loop is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def _at_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop that owns the publisher."""
        return await self._on(self._home, coro)

    async def caught_up(self) -> bool:
        """``_caught_up`` asked from any loop (the consumer lives on the runner's)."""
        return await self._on(self._own_loop, self._caught_up())

    async def run(self, until_caught_up: bool = False) -> RunnerStats:
        """Consume until stop() (or, with ``until_caught_up``, until the log is applied).

        Outages of the broker or the store end only the current session: the consumer is
        rebuilt after a pause, and the log's identity read again (a broker that restarted
        empty has a new topic id, so the positions stored for the old one no longer apply
        and the new log is read from its beginning)."""
        outage = Outage(log, f"projection {self.projection.name}", self._stop)
        try:
            await outage.keep_running(lambda: self._session(until_caught_up, outage))
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
        return self.stats

    async def _session(self, until_caught_up: bool, outage: Outage) -> bool:
        """One consumer's life; True when ``until_caught_up`` was reached."""
        self._topic_id, partitions = await asyncio.to_thread(
            log_identity, self.settings, self.topic)
        self.tables = await self._in_thread(ensure_built, self.store, self.projection)
        self._next.clear()
        await self._in_thread(self._catch_up, True)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.group_prefix}.{self.consumer_name}",
            client_id=f"hub-{self.projection.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(500, self.settings.session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
            if self.settings.consumer_groups:
                consumer.subscribe([self.topic], listener=_Listener(self))
            else:  # alone: every partition is ours, no group to join (seconds saved at start)
                assigned = [TopicPartition(self.topic, p) for p in range(partitions)]
                consumer.assign(assigned)
                await self._seek_to_stored(assigned)
            check_at = time.monotonic() + LOG_CHECK_SECONDS
            while not self._stop.is_set():
                records = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max_records)
                if records:
                    async with self._batch_lock:
                        done = await self._process(records)
                    if done:
                        self._commit_kafka_later(done)
                    outage.recovered()
                elif until_caught_up and await self._caught_up():
                    return True
                if time.monotonic() >= check_at:
                    # The consumer itself only retries quietly when the broker is gone or
                    # restarted: ask the broker what log it holds now.
                    await self._check_log()
                    outage.recovered()
                    check_at = time.monotonic() + LOG_CHECK_SECONDS
            return False
        finally:
            self._consumer = None
            if self._committer is not None and not self._committer.done():
                self._committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._committer
            self._committer = None
            self._to_commit.clear()
            await close_consumer(consumer)

    async def _check_log(self) -> None:
        """Raise if the broker is unreachable or holds a new log; measure the lag."""
        topic_id, _ = await asyncio.to_thread(
            log_identity, self.settings, self.topic, 3.0, LOG_CHECK_SECONDS / 2)
        if topic_id != self._topic_id:
            raise NewLog(f"{self.topic} is a new log (topic id {self._topic_id} -> {topic_id})")
        async with self._batch_lock:
            # The journal may still be committing the last events of a log that is gone.
            await self._in_thread(self._catch_up, False)
        consumer = self._consumer
        assigned = list(consumer.assignment()) if consumer is not None else []
        if assigned and self._next:
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), 3.0)
            self.stats.lag = sum(max(0, end - self._next.get(tp.partition, end))
                                 for tp, end in ends.items())
            LAG.labels(self.projection.name).set(self.stats.lag)

    async def _caught_up(self) -> bool:
        """True when the stored positions cover every partition's end, whoever holds it.

        Measured on the stored positions, not this consumer's assignment: right after a
        restart a dead predecessor may still hold partitions until its session times out.
        """
        assert self._consumer is not None
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        tps = [TopicPartition(self.topic, p) for p in parts]
        ends = await self._consumer.end_offsets(tps)
        starts = await self._consumer.beginning_offsets(tps)
        _, stored = await self._in_thread(self._load_positions)
        lag = sum(max(0, ends[tp] - stored.get(tp.partition, starts[tp] - 1) - 1) for tp in tps)
        self.stats.lag = lag
        LAG.labels(self.projection.name).set(lag)
        self.stats.caught_up = lag == 0
        return lag == 0

    async def _seek_to_stored(self, assigned) -> None:
        async with self._batch_lock:
            await self._seek_unlocked(assigned)

    async def _seek_unlocked(self, assigned) -> None:
        assert self._consumer is not None
        state, stored = await self._in_thread(self._load_positions)
        self._epoch = state
        fresh = [tp for tp in assigned if tp.partition not in stored]
        # An explicit offset, not seek_to_beginning(): that one resets lazily and can race
        # with a fetch already under way, delivering the first records twice.
        starts = await self._consumer.beginning_offsets(fresh) if fresh else {}
        for tp in assigned:
            start = stored[tp.partition] + 1 if tp.partition in stored else starts[tp]
            self._consumer.seek(tp, start)
            self._next[tp.partition] = start

    def _load_positions(self) -> tuple[int, dict[int, int]]:
        with self.store.connect() as conn:
            st = tracking.projection_state(conn, self.projection.name)
            pos = tracking.load_positions(conn, self.consumer_name, self.topic, self._topic_id)
        return (st[1] if st else 0), pos

    async def _process(self, records: dict) -> dict[int, int] | None:
        """Apply one fetched batch; the offsets to commit to Kafka, or None."""
        events: list[Event] = []
        bad: list[DeadLetter] = []
        last: dict[int, int] = {}
        for tp, msgs in records.items():
            # A fetch already in flight when we seek can hand back records from before the
            # seek position; they were applied, so drop them here (the stored position in
            # the transaction below would skip them too, at the cost of a round trip).
            expected = self._next.get(tp.partition, 0)
            msgs = [m for m in msgs if m.offset >= expected]
            self.stats.refetched += len(records[tp]) - len(msgs)
            for m in msgs:
                last[tp.partition] = m.offset
                try:
                    events.append(Event.from_record(m, tp.topic, self._topic_id))
                except EnvelopeError as exc:
                    # Keyed by the record alone: every projection meets the same bad record,
                    # and it is one refused input.
                    bad.append(refuse_record(
                        self.consumer_name, "bad-envelope",
                        [Issue("(headers)", str(exc), "structure")], "log", tp.topic,
                        self._topic_id, tp.partition, m.offset, m.key, m.value, m.headers))
        if not last:
            return None
        if bad:
            await self._at_home(self.publisher.publish_raw(self.settings.topics.deadletter,
                                                           [x.record() for x in bad]))
            self.stats.deadlettered += len(bad)
        started = time.perf_counter()
        try:
            await self._commit_with_retries(events, last, bad)
        except _Reseek:
            await self._seek_unlocked(self._consumer.assignment())
            return None
        for p, o in last.items():
            self._next[p] = o + 1
        BATCH_SECONDS.labels(self.projection.name).observe(time.perf_counter() - started)
        crashpoint(self.settings.crash_at, "after_store_commit")
        self.stats.batches += 1
        self.stats.last_commit = time.time()
        if self.on_commit is not None:
            if self._home is None:
                self.on_commit(events, self.stats.last_commit)
            else:
                self._home.call_soon_threadsafe(self.on_commit, events, self.stats.last_commit)
        return last

    def _commit_kafka_later(self, last: dict[int, int]) -> None:
        """Commit the Kafka offsets in the background, the latest ones at most once at a time.

        They are advisory (the stored positions are the truth), yet awaiting each commit's
        round trip took about half of a busy runner's cycle: the journal, whose commits
        acknowledgements wait for, fetched its next batch only after it. In a task of its own
        it also stays outside the batch lock: a commit may wait on a rebalance whose listener
        waits on that lock."""
        self._to_commit.update(last)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())

    async def _commit_pending(self) -> None:
        while self._to_commit and self._consumer is not None:
            offsets, self._to_commit = self._to_commit, {}
            await self._commit_kafka(offsets)

    async def _commit_kafka(self, last: dict[int, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(
                {TopicPartition(self.topic, p): OffsetAndMetadata(o + 1, "") for p, o in
                 last.items()})
        except Exception as exc:  # advisory only: the stored positions are the truth
            log.debug("kafka offset commit failed (harmless): %s", exc)

    async def _commit_with_retries(self, events: list[Event], last: dict[int, int],
                                   letters: list[DeadLetter]) -> None:
        delay = 0.2
        attempt = 0
        while attempt <= self.settings.max_retries:
            try:
                await self._in_thread(self._commit_batch, events, last, letters)
                return
            except _Reseek:
                raise
            except Exception as exc:
                if await self._wait_for_store(exc):
                    continue  # not the events' fault: the attempt does not count
                log.warning("%s: batch failed (attempt %d): %s", self.projection.name,
                            attempt + 1, exc)
                attempt += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await self._one_by_one(events, last, letters)

    async def _wait_for_store(self, exc: Exception) -> bool:
        """If ``exc`` is the database being away (down, locked, read-only), wait until it
        takes a write again and return True; False if the failure may be the events'."""
        if not isinstance(exc, StoreError):
            return False
        if not store_away(exc) and await self._in_thread(self._healthy):
            return False
        pause = 0.5
        started = time.monotonic()
        log.warning("%s: the store is unavailable (%s); waiting for it, the events are not "
                    "to blame", self.projection.name, exc)
        while not await self._in_thread(self._healthy):
            if self._stop.is_set():
                raise exc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)
            pause = min(pause * 2, 5.0)
        if self._stop.is_set():
            raise exc
        log.warning("%s: the store is back after %.1f s", self.projection.name,
                    time.monotonic() - started)
        return True

    async def _one_by_one(self, events: list[Event], last: dict[int, int],
                          letters: list[DeadLetter]) -> None:
        """Isolate the poison event(s): apply singly, dead-letter what keeps failing."""
        for ev in events:
            error: Exception | None = None
            tries = 0
            while tries < self.settings.max_retries:
                try:
                    await self._in_thread(self._commit_batch, [ev], {ev.partition: ev.offset})
                    error = None
                    break
                except _Reseek:
                    raise
                except Exception as exc:
                    error = exc
                    if not await self._wait_for_store(exc):
                        tries += 1
            if error is not None:
                letter = self._poison_letter(ev, error)
                await self._at_home(self.publisher.publish_raw(
                    self.settings.topics.deadletter, [letter.record()]))
                self.stats.deadlettered += 1
                DEADLETTERED.labels(self.projection.name).inc()
                await self._in_thread(self._commit_batch, [], {ev.partition: ev.offset},
                                        [letter])
        await self._in_thread(self._commit_batch, [], last, letters)

    def _poison_letter(self, ev: Event, error: Exception) -> DeadLetter:
        env = Envelope(ev.id, ev.source, ev.type, ev.subject, ev.time, ev.key, ev.data,
                       signature=ev.signature)
        return refuse_record(
            self.consumer_name, "apply-failed",
            [Issue("(event)", f"{type(error).__name__}: {error}", "exception")],
            self.consumer_name, ev.topic, ev.topic_id, ev.partition, ev.offset,
            ev.key.encode(), ev.data, env.headers())

    def _healthy(self) -> bool:
        """The store answers and takes a write (a locked or read-only one reads fine)."""
        try:
            with self.store.begin() as conn:
                # SQLite: begin() takes the write lock, so a locked file fails here.
                tracking.projection_state(conn, self.projection.name)
            return True
        except StoreError:
            return False

    def _catch_up(self, all_logs: bool) -> int:
        """Apply what the journal kept of earlier logs and this projection missed
        (``hub.engine.catchup``). Returns the events applied."""
        if not self.rebuildable or not self._topic_id:
            return 0  # the journal itself
        with self.store.connect() as conn:
            todo = catchup.earlier_logs(conn, self.consumer_name, self.topic, self._topic_id,
                                        all_logs)
            self._epoch = (tracking.projection_state(conn, self.projection.name) or (0, 0))[1]
        before = self.stats.applied
        for (topic_id, partition), after in sorted(todo.items()):
            while True:
                with self.store.connect() as conn:
                    events = catchup.missed(conn, self.topic, topic_id, partition, after,
                                            self.settings.batch_max_records)
                if not events:
                    break
                after = events[-1].offset
                self._commit_batch(events, {partition: after}, topic_id=topic_id)
        applied = self.stats.applied - before
        if applied:
            log.warning("%s: applied %d events from the journal that an earlier log (gone "
                        "now) had not delivered to it", self.projection.name, applied)
        return applied

    def _commit_batch(self, events: list[Event], last: dict[int, int],
                      letters: Sequence[DeadLetter] = (), topic_id: str | None = None
                      ) -> None:
        name = self.projection.name
        topic_id = topic_id or self._topic_id
        # apply() is pure, so it runs before the write lock is taken: on SQLite one writer of
        # the process holds that lock at a time, and the journal's commit (acknowledgements
        # wait for it) should not wait for another projection's Python. Live batches are all
        # fresh; the rare batch that is partly applied already is folded again below.
        ahead = self.projection.apply(events) if events else []
        # The journal's commits are what acknowledgements wait for: they go first.
        with self.store.begin(urgent=not self.rebuildable) as conn:
            state = tracking.projection_state(conn, name)
            if state is not None and state[1] != self._epoch:
                raise _Reseek()
            stored = tracking.load_positions(conn, self.consumer_name, self.topic, topic_id)
            fresh = [e for e in events if e.offset > stored.get(e.partition, -1)]
            if self.dedupe and fresh:
                new_ids = tracking.new_event_ids(conn, self.consumer_name, (e.id for e in fresh))
                once: list[Event] = []
                for e in fresh:
                    if e.id in new_ids:
                        new_ids.discard(e.id)  # a duplicate inside this batch: first wins
                        once.append(e)
                fresh = once
            crashpoint(self.settings.crash_at, "before_apply")
            changes = ahead if len(fresh) == len(events) else self.projection.apply(fresh)
            write(conn, self.tables, changes)
            dead_letters.insert(conn, letters, published=True)
            moved = {p: o for p, o in last.items() if o > stored.get(p, -1)}
            tracking.save_positions(conn, self.consumer_name, self.topic, topic_id, moved)
            crashpoint(self.settings.crash_at, "before_store_commit")
        skipped = len(events) - len(fresh)
        self.stats.applied += len(fresh)
        self.stats.skipped += skipped
        EVENTS_APPLIED.labels(name).inc(len(fresh))
        if skipped:
            EVENTS_SKIPPED.labels(name).inc(skipped)
