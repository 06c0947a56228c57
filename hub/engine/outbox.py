"""Change feeds: a projection's outbox table, relayed to a Kafka topic.

A projection writes one message per change into its outbox in the same transaction as its
rows, so a feed never misses a change the tables hold. The relay publishes unsent messages in
order (the row's key column is the Kafka key, so one key's messages keep their order) and
then marks them sent: at least once, with a stable ``ce_id`` per message, so a consumer that
skips ids it has seen gets each change once. One relay per feed at a time (a lease) among
replicas. After a rebuild of the projection its outbox is refilled and resent with the same
ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa

from hub.engine.outage import TRANSIENT, Outage
from hub.log.producer import Publisher
from hub.store import lease
from hub.store.db import Store

log = logging.getLogger(__name__)
LEASE_TTL = 15.0


class OutboxRelay:
    def __init__(self, store: Store, publisher: Publisher, table: sa.Table, topic: str,
                 ce_type: str) -> None:
        self.store = store
        self.publisher = publisher
        self.table = table
        self.topic = topic
        self.ce_type = ce_type
        self.lease = f"feed:{table.name}"
        self.holder = lease.holder_name(table.name)
        self.sent = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        outage = Outage(log, f"{self.topic} feed", self._stop)
        while not self._stop.is_set():
            n = 0
            try:
                if await asyncio.to_thread(lease.acquire, self.store, self.lease, self.holder,
                                           LEASE_TTL):
                    n = await self.relay_once()
                outage.recovered()
            except TRANSIENT as exc:  # broker or store away: unsent rows wait in the outbox
                await outage.failed(exc)
                continue
            if not n:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)

    def _unsent(self, limit: int) -> list:
        t = self.table
        with self.store.connect() as conn:
            return conn.execute(sa.select(t.c.seq, t.c.feed_id, t.c.patient_key, t.c.payload)
                                .where(t.c.sent.is_(False)).order_by(t.c.seq)
                                .limit(limit)).all()

    def _mark(self, seqs: list[int]) -> None:
        t = self.table
        with self.store.begin() as conn:
            for i in range(0, len(seqs), 900):
                conn.execute(sa.update(t).where(t.c.seq.in_(seqs[i:i + 900])).values(sent=True))

    def record(self, key: bytes, payload: bytes, feed_id: str) -> tuple:
        """One Kafka record of the feed: a CloudEvent in binary mode, its id stable."""
        return (key, payload, [
            ("ce_specversion", b"1.0"), ("ce_id", feed_id.encode()),
            ("ce_source", b"urn:hie:hub"), ("ce_type", self.ce_type.encode()),
            ("content-type", b"application/json")])

    async def relay_once(self, limit: int = 2000) -> int:
        rows = await asyncio.to_thread(self._unsent, limit)
        if not rows:
            return 0
        records = [self.record(r.patient_key.encode(), r.payload, r.feed_id) for r in rows]
        await self.publisher.publish_raw(self.topic, records)
        await asyncio.to_thread(self._mark, [r.seq for r in rows])
        self.sent += len(rows)
        return len(rows)
