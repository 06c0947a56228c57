"""Durable acknowledgement's waiting side, on a real SQLite journal (no broker needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from hub.engine.acks import JournalAcks
from hub.engine.projection import Event
from hub.store.db import open_store
from hub.store.schema import journal


def _journal(store, *ids: str) -> None:
    with store.begin() as conn:
        conn.execute(sa.insert(journal), [
            {"event_id": i, "source": "urn:hie:facility:x", "type": "t", "subject": "s",
             "time": "2026-01-01T00:00:00Z", "key": "k", "data": b"{}", "topic": "e",
             "topic_id": "id", "partition": 0, "offset": n} for n, i in enumerate(ids)])


def _event(eid: str) -> Event:
    return Event(eid, "urn:hie:facility:x", "t", "s", "2026-01-01T00:00:00Z", "k", b"{}")


async def test_commits_reported_in_process_answer_at_once(tmp_path: Path) -> None:
    acks = JournalAcks(open_store(f"sqlite:///{tmp_path / 'hub.db'}"))
    acks.start()
    try:
        acks.expect(["a", "b"])
        waiting = asyncio.create_task(acks.wait(["a", "b"], timeout=5))
        acks.committed([_event("a")], 0.0)
        await asyncio.sleep(0.05)
        assert not waiting.done()  # "b" is not journaled yet
        acks.committed([_event("b"), _event("other")], 0.0)
        assert await asyncio.wait_for(waiting, 1)
        assert not acks._waiting
    finally:
        await acks.stop()


async def test_the_journal_table_is_polled_when_no_runner_reports(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    acks = JournalAcks(store)
    acks.start()
    try:
        acks.expect(["c"])
        waiting = asyncio.create_task(acks.wait(["c"], timeout=5))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(_journal, store, "c")  # another process's journal runner
        assert await asyncio.wait_for(waiting, 1)
    finally:
        await acks.stop()


async def test_not_journaled_within_the_bound_is_not_acknowledged(tmp_path: Path) -> None:
    acks = JournalAcks(open_store(f"sqlite:///{tmp_path / 'hub.db'}"))
    acks.start()
    try:
        acks.expect(["d"])
        assert not await acks.wait(["d"], timeout=0.2)
        assert not acks._waiting  # nothing left behind
    finally:
        await acks.stop()
