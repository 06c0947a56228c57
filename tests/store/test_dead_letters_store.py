"""Dead letters in SQL, written once and run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from hub import clock
from hub.config import Settings
from hub.deadletters import store as sql
from hub.deadletters.keeper import DeadLetterKeeper
from hub.deadletters.letter import refuse
from hub.deadletters.read import count, get_dead_letter, list_dead_letters, make_filter, search
from hub.errors import StoreError
from hub.fhir import Issue
from hub.log.producer import Publisher
from hub.store.db import open_store

T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


@pytest.fixture
def at():
    fixed = clock.FixedClock(T0)
    previous = clock.use_clock(fixed)
    yield fixed
    clock.use_clock(previous)


def letters(at) -> list:
    """Five refusals an hour apart: two facilities, three reasons, three entry paths."""
    out = []
    for i, (entry, reason, facility) in enumerate([
            ("gateway", "invalid-json", "township-1"), ("gateway", "invalid-resource",
                                                        "township-1"),
            ("ingest", "bad-signature", "village-1"), ("ingest", "invalid-resource",
                                                       "village-1"),
            ("projection:activity", "apply-failed", None)]):
        out.append(refuse(entry, reason, f"body {i}".encode() + b"\x00\xff",
                          issues=[Issue("(body)", f"problem {i}")], facility=facility,
                          event_id=f"e-{i}", key=b"\x01key", headers=[("h", b"\xfe")],
                          natural_key=("test", i)))
        at.advance(timedelta(hours=1))
    return out


def test_rows_keep_the_input_byte_for_byte_and_a_second_insert_changes_nothing(store, at):
    kept = letters(at)
    sql.keep(store, kept)
    sql.keep(store, kept, published=True)  # the same records handled again after a crash
    assert count(store, make_filter()) == 5
    got = get_dead_letter(store, kept[2].id)
    assert got.original == b"body 2\x00\xff" and got.key == b"\x01key"
    assert got.headers == (("h", b"\xfe"),)
    assert got.outcome["issue"][0]["diagnostics"] == "problem 2"
    assert (got.reason, got.entry, got.facility, got.detail) == (
        "bad-signature", "ingest", "village-1", "problem 2")
    assert got.published is False and got.size == 8  # the first copy stayed
    sql.mark_published(store, [kept[2].id])
    assert get_dead_letter(store, kept[2].id).published is True
    assert get_dead_letter(store, "nope") is None


def test_filters(store, at):
    kept = letters(at)
    sql.keep(store, kept)

    def ids(**kw) -> list[str]:
        return [r.id for r in list_dead_letters(store, **kw)]

    everyone = ids()
    assert everyone == [x.id for x in reversed(kept)]  # newest first
    assert ids(reason="invalid-resource") == [kept[3].id, kept[1].id]
    assert ids(reason="invalid-json,bad-signature") == [kept[2].id, kept[0].id]
    assert ids(facility="village-1", reason="invalid-resource") == [kept[3].id]
    assert ids(entry="projection:activity") == [kept[4].id]
    assert ids(event_id="e-1") == [kept[1].id]
    assert ids(since="2026-11-23T01:00:00Z", until="2026-11-23T03:00:00Z") == [
        kept[2].id, kept[1].id]  # since inclusive, until exclusive
    assert ids(since="2026-11-23T09:00:00+08:00") == [kept[4].id, kept[3].id, kept[2].id,
                                                      kept[1].id]
    assert ids(since="3h") == [kept[4].id, kept[3].id, kept[2].id]  # the clock is at 05:00
    assert ids(limit=2, offset=1) == everyone[1:3]
    # what a facility may see: only its own; no facility at all sees nothing
    assert [r.id for r in search(store, make_filter(visible=frozenset({"township-1"})))] == [
        kept[1].id, kept[0].id]
    assert search(store, make_filter(visible=frozenset())) == []
    assert count(store, make_filter(reason="invalid-resource")) == 2


async def test_concurrent_refusals_share_commits_and_all_land(store, at, tmp_path):
    """Fifty refusals at once: every one committed before its caller goes on. With no
    broker to publish to, they are kept unpublished and counted."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    keeper = DeadLetterKeeper(store, Publisher(settings), "nowhere")  # never started
    before = REGISTRY.get_sample_value("hub_deadletters_unpublished_total",
                                       {"path": "gateway"}) or 0
    batch = [[refuse("gateway", "invalid-json", f"{i}".encode())] for i in range(50)]
    await asyncio.gather(*(keeper.keep(b) for b in batch))
    assert count(store, make_filter()) == 50
    await keeper.close()
    assert not any(r.published for r in list_dead_letters(store, limit=50))
    after = REGISTRY.get_sample_value("hub_deadletters_unpublished_total", {"path": "gateway"})
    assert after - before == 50


async def test_a_refusal_that_cannot_be_recorded_says_so(tmp_path, at):
    broken = open_store(f"sqlite:///{tmp_path / 'empty.db'}", create=False)  # no tables
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    keeper = DeadLetterKeeper(broken, Publisher(settings), "nowhere")
    try:
        results = await asyncio.gather(
            *(keeper.keep([refuse("gateway", "invalid-json", b"x")]) for _ in range(5)),
            return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
    finally:
        await keeper.close()
        broken.dispose()
