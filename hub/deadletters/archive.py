"""Dead letters that reached only the topic, copied into SQL.

The gateway, the ingest stage and the projection runner keep their dead letters in SQL
themselves, before they answer or move on; this consumer leaves theirs alone (they carry
``hub_deadletter_id``). Adapters that run without the hub's store (``hub mllp``, ``hub
hl7-import`` at a facility) publish theirs to ``hie.deadletter.v1`` only; this consumer, run
beside the journal, copies them into SQL. Their ids are derived here, never taken from the
message: anyone who may write to the topic could otherwise claim the id of a letter the hub
is about to keep and have it ignored. The same letter sent twice (same id) is one row.
Per batch: commit the rows, then the Kafka offsets (at least once; the ids make a repeat
harmless).

It reads every partition itself, from the offsets committed under its group id, without
joining the group: several hub processes may each copy the same letters, which costs a few
ignored inserts and no group rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from hub import clock
from hub.config import Settings
from hub.deadletters import store as sql
from hub.deadletters.letter import DeadLetter, from_record, letter_id
from hub.engine.outage import LOG_CHECK_SECONDS, TRANSIENT, NewLog, Outage, close_consumer
from hub.errors import StoreError
from hub.log.topics import log_identity
from hub.store.db import Store

log = logging.getLogger(__name__)
KEPT_BY_THEIR_PATH = ("gateway", "ingest", "projection:", "devices")  # the store at hand


class DeadLetterArchive:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.topics.deadletter
        self.archived = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Copy until stop(); a broker outage or restart rebuilds the consumer after a pause
        (a restarted bundled broker is a new log: read from its start)."""
        outage = Outage(log, "dead-letter archive", self._stop)
        while not self._stop.is_set():
            try:
                await self._session(outage)
            except TRANSIENT as exc:
                await outage.failed(exc)

    async def _session(self, outage: Outage) -> None:
        topic_id, partitions = await asyncio.to_thread(
            log_identity, self.settings, self.topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.group_prefix}.deadletters", client_id="hub-deadletters",
            enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            await consumer.start()
            check_at = time.monotonic() + LOG_CHECK_SECONDS
            assigned = [TopicPartition(self.topic, p) for p in range(partitions)]
            consumer.assign(assigned)
            starts = await consumer.beginning_offsets(assigned)
            for tp in assigned:
                committed = await consumer.committed(tp)
                consumer.seek(tp, committed if committed is not None else starts[tp])
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if time.monotonic() >= check_at:
                    now_id, _ = await asyncio.to_thread(
                        log_identity, self.settings, self.topic, 3.0, LOG_CHECK_SECONDS / 2)
                    if now_id != topic_id:
                        raise NewLog(f"{self.topic} is a new log")
                    outage.recovered()
                    check_at = time.monotonic() + LOG_CHECK_SECONDS
                if not batch:
                    continue
                letters = [x for tp, msgs in batch.items() for m in msgs
                           if (x := _copy(topic_id, tp, m)) is not None]
                while letters:
                    try:
                        await asyncio.to_thread(sql.keep, self.store, letters, True)
                        break
                    except StoreError as exc:  # wait the database out; the letters wait too
                        log.warning("dead-letter archive: %s; retrying", exc)
                        if self._stop.is_set():
                            return
                        await asyncio.sleep(1.0)
                self.archived += len(letters)
                try:
                    await consumer.commit()
                except Exception as exc:  # only the restart point: a repeat is harmless
                    log.debug("dead-letter archive: offset commit failed: %s", exc)
        finally:
            await close_consumer(consumer)


def _copy(topic_id: str, tp: TopicPartition, m: ConsumerRecord) -> DeadLetter | None:
    """The letter to copy, or None when a hub path kept it in SQL itself."""
    own = {n: (v or b"").decode(errors="replace") for n, v in m.headers or ()
           if n in ("hub_deadletter_id", "hub_error_stage")}
    sent_id = own.get("hub_deadletter_id")
    if sent_id and own.get("hub_error_stage", "").startswith(KEPT_BY_THEIR_PATH):
        return None
    natural = ("topic", sent_id) if sent_id else ("topic", topic_id, tp.topic, tp.partition,
                                                 m.offset)
    return from_record(m.key, m.value, m.headers or (), letter_id(natural), _stamp(m.timestamp))


def _stamp(ms: int | None) -> str:
    """When the letter reached the topic: its refusal time if it carries none."""
    if not ms:
        return clock.now_rfc3339()
    return clock.rfc3339(datetime.fromtimestamp(ms / 1000, UTC))
