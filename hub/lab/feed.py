"""The lab change feed: the lab projection's outbox, relayed to ``hie.lab.v1``.

The projection writes one message per lab event into ``lab_feed`` in the same transaction
as its rows, so the feed never misses a change the tables hold. The relay publishes unsent
messages in order (key: the patient key, so one patient's messages keep their order) and
then marks them sent: at least once, with a stable ``ce_id`` per message, so a consumer that
skips ids it has seen gets each change once. One relay at a time (a lease) among replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import sqlalchemy as sa

from hub.config import Settings
from hub.errors import HubError
from hub.lab.projection import FEED, FEED_TYPE, LabProjection
from hub.log.producer import Publisher
from hub.store import lease
from hub.store.db import Store

log = logging.getLogger(__name__)
LEASE = "lab-feed"
LEASE_TTL = 15.0
_FEED = LabProjection().tables(sa.MetaData())[FEED]


class FeedRelay:
    def __init__(self, settings: Settings, store: Store, publisher: Publisher) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.holder = f"{socket.gethostname()}:{os.getpid()}:feed"
        self.sent = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            n = 0
            try:
                if await asyncio.to_thread(lease.acquire, self.store, LEASE, self.holder,
                                           LEASE_TTL):
                    n = await self.relay_once()
            except HubError as exc:
                log.warning("lab feed: %s; retrying", exc)
            if not n:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)

    def _unsent(self, limit: int) -> list:
        with self.store.connect() as conn:
            return conn.execute(sa.select(_FEED.c.seq, _FEED.c.feed_id, _FEED.c.patient_key,
                                          _FEED.c.payload)
                                .where(_FEED.c.sent.is_(False)).order_by(_FEED.c.seq)
                                .limit(limit)).all()

    def _mark(self, seqs: list[int]) -> None:
        with self.store.begin() as conn:
            for i in range(0, len(seqs), 900):
                conn.execute(sa.update(_FEED).where(_FEED.c.seq.in_(seqs[i:i + 900]))
                             .values(sent=True))

    async def relay_once(self, limit: int = 2000) -> int:
        rows = await asyncio.to_thread(self._unsent, limit)
        if not rows:
            return 0
        records = [(r.patient_key.encode(), r.payload, [
            ("ce_specversion", b"1.0"), ("ce_id", r.feed_id.encode()),
            ("ce_source", b"urn:hie:hub"), ("ce_type", FEED_TYPE.encode()),
            ("content-type", b"application/json")]) for r in rows]
        await self.publisher.publish_raw(self.settings.topics.lab, records)
        await asyncio.to_thread(self._mark, [r.seq for r in rows])
        self.sent += len(rows)
        return len(rows)
