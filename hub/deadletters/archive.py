"""Dead letters that reached only the topic, copied into SQL.

The gateway, the ingest stage and the projection runner keep their dead letters in SQL
themselves. Adapters that run without the hub's store (``hub mllp``, ``hub hl7-import`` at a
facility) publish theirs to ``hie.deadletter.v1`` only; this consumer, run beside the
journal, copies every letter on the topic into SQL. A letter already kept carries its row id
(``hub_deadletter_id``), so inserting it again is a no-op; any other letter's id comes from
its place on the topic. Per batch: commit the rows, then the Kafka offsets (at least once;
the ids make a repeat harmless).

It reads every partition itself, from the offsets committed under its group id, without
joining the group: several hub processes may each copy the same letters, which costs a few
ignored inserts and no group rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub import clock
from hub.config import Settings
from hub.deadletters import store as sql
from hub.deadletters.letter import from_record, letter_id
from hub.errors import StoreError
from hub.log.topics import topic_identity
from hub.store.db import Store

log = logging.getLogger(__name__)


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
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.group_prefix}.deadletters", client_id="hub-deadletters",
            enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            topic_id, partitions = await asyncio.to_thread(
                topic_identity, self.settings.bootstrap, self.topic)
            assigned = [TopicPartition(self.topic, p) for p in range(partitions)]
            consumer.assign(assigned)
            starts = await consumer.beginning_offsets(assigned)
            for tp in assigned:
                committed = await consumer.committed(tp)
                consumer.seek(tp, committed if committed is not None else starts[tp])
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if not batch:
                    continue
                letters = [
                    from_record(m.key, m.value, m.headers or (),
                                letter_id(("deadletter", topic_id, tp.topic, tp.partition,
                                           m.offset)),
                                _stamp(m.timestamp))
                    for tp, msgs in batch.items() for m in msgs]
                while True:
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
            await consumer.stop()



def _stamp(ms: int | None) -> str:
    """When the letter reached the topic: its refusal time if it carries none."""
    if not ms:
        return clock.now_rfc3339()
    return clock.rfc3339(datetime.fromtimestamp(ms / 1000, UTC))
