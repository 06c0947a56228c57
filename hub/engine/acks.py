"""Durable acknowledgement: wait until events are committed in the SQL journal.

With the bundled broker (memory only) the journal is the durable copy of the log, so an
answer that says "accepted" must wait for the journal's commit, not only the broker's
acknowledgement. The journal runner commits in batches (group commit): many waiting
requests share one SQL transaction.

Contract, in order:

1. ``expect(ids)`` BEFORE the events are published: the journal may commit them before the
   publisher's caller resumes, and a commit reported before anyone waits would be missed.
2. Publish. If that fails, ``forget(ids)``.
3. ``await wait(ids, timeout)``: True once every id is in ``hub_journal``; False if that did
   not happen within ``timeout`` (then the answer is "not acknowledged": the events may
   still be journaled later; consumers drop duplicate event ids).

Two sources say an id is journaled, with the same meaning:

* this process's journal runner, through ``ProjectionRunner.on_commit`` (``committed``):
  at once, no query;
* a poll of ``hub_journal`` by event id, one query for every waiter, when no journal runs
  in this process (``hub serve --no-projections``) and, more slowly, as a backstop when one
  does (with several replicas in one consumer group, another process's journal runner may
  hold the partition an event went to).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from hub.engine.projection import Event
from hub.engine.waiters import IdWaiters
from hub.envelope import Envelope
from hub.errors import NotAcknowledged, StoreError
from hub.log.producer import Publisher
from hub.store.db import Store
from hub.store.schema import journal

log = logging.getLogger(__name__)

# SQLite's bound-parameter limit is 999 in old builds: stay well under it.
_CHUNK = 500


class JournalAcks(IdWaiters[None]):
    """Futures per event id, resolved when the journal has committed the event."""

    def __init__(self, store: Store, poll_s: float = 0.01, backstop_poll_s: float = 0.25
                 ) -> None:
        super().__init__()
        self.store = store
        self.poll_s = poll_s
        self.backstop_poll_s = backstop_poll_s
        self.in_process = False  # set once this process's journal runner reports commits
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="journal-acks")

    # --- the journal runner's side ------------------------------------------------------

    def committed(self, events: Sequence[Event], _at: float) -> None:
        """``on_commit`` of the journal's runner: these events are in ``hub_journal`` now
        (those it skipped as already applied were committed earlier)."""
        self.in_process = True
        if not self._waiting:
            return
        for e in events:
            fut = self._waiting.pop(e.id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    # --- the acknowledging side ---------------------------------------------------------

    def expect(self, ids: Iterable[str]) -> None:
        super().expect(ids)
        self._wake.set()

    async def wait(self, ids: Sequence[str], timeout: float) -> bool:
        futs = [f for i in ids if (f := self._waiting.get(i)) is not None]
        try:
            if futs:
                await asyncio.wait(futs, timeout=timeout)
            if all(f.done() and not f.cancelled() for f in futs):
                return True
            # One last look at the table before saying no: a commit may have landed between
            # two polls.
            missing = [i for i in ids if i in self._waiting]
            found = await asyncio.to_thread(self._journaled, missing)
            return len(found) == len(set(missing))
        except StoreError:
            return False
        finally:
            self.forget(ids)

    # --- the poll ---------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.backstop_poll_s if self.in_process else self.poll_s)
            ids = list(self._waiting)
            if not ids:
                continue
            try:
                found = await asyncio.to_thread(self._journaled, ids)
            except StoreError as exc:  # waiters time out on their own; keep looking
                log.warning("cannot read the journal to acknowledge events: %s", exc)
                continue
            for i in found:
                fut = self._waiting.pop(i, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _journaled(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        if not ids:
            return found
        with self.store.connect() as conn:
            for n in range(0, len(ids), _CHUNK):
                found.update(conn.execute(sa.select(journal.c.event_id).where(
                    journal.c.event_id.in_(ids[n:n + _CHUNK]))).scalars())
        return found


async def publish_durably(publisher: Publisher, topic: str, envelopes: Sequence[Envelope],
                          acks: JournalAcks | None, timeout: float) -> None:
    """Append ``envelopes`` and return at the durable moment: the broker's acknowledgement,
    and with ``acks`` (ack_after=journal) the journal's commit as well.

    Raises BrokerError if the broker did not acknowledge them, NotAcknowledged (a
    BrokerError) if the journal did not commit them within ``timeout`` after that: not
    acknowledged, and a retry is safe (consumers drop duplicate event ids)."""
    ids = [e.id for e in envelopes]
    if acks is not None:
        acks.expect(ids)  # before publishing: the journal may commit before we resume
    try:
        await publisher.publish(topic, envelopes)
    except BaseException:
        if acks is not None:
            acks.forget(ids)
        raise
    if acks is not None and not await acks.wait(ids, timeout):
        raise NotAcknowledged(
            f"the broker took {len(ids)} event(s) but the journal did not commit them within "
            f"{timeout:g} s")
