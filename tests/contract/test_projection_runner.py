"""The projection runner against a real broker, on every store backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest
import sqlalchemy as sa

from hub.activity.projection import ActivityProjection
from hub.deadletters.read import get_dead_letter, list_dead_letters
from hub.engine.projection import Change, Event
from hub.engine.rebuild import rebuild
from hub.engine.runner import ProjectionRunner
from hub.journal import JournalProjection
from hub.log.inspect import read_deadletters
from hub.log.producer import Publisher
from hub.record.projection import SharedRecordProjection
from hub.record.read import get_resource
from tests.support.checks import table_digest
from tests.support.events import envelope, publish
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.contract]


async def run_until_caught_up(settings, store, projection):
    pub = await Publisher(settings).start()
    try:
        runner = ProjectionRunner(settings, store, projection, pub)
        return await asyncio.wait_for(runner.run(until_caught_up=True), 90)
    finally:
        await pub.stop()


def counts(store) -> dict[str, int]:
    with store.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT resource_type, events FROM activity_counts")).all()
    return {r: int(n) for r, n in rows}


async def test_duplicates_and_late_versions_apply_once(make_settings, store):
    settings = make_settings()
    v1 = envelope(observation(value=5.0, version=1, updated="2026-11-01T08:00:00+08:00"))
    v2 = envelope(observation(value=7.0, version=2, updated="2026-11-01T09:00:00+08:00"))
    late_v1 = envelope(observation(value=5.5, version=1, updated="2026-11-01T08:30:00+08:00"))
    await publish(settings, [envelope(patient()), v1, v2])
    # v2 delivered again (a producer retry) and an older version arriving late
    await publish(settings, [v2, late_v1])
    await run_until_caught_up(settings, store, SharedRecordProjection())
    stats = await run_until_caught_up(settings, store, ActivityProjection())
    # the ledger caught the repeat (and anything a rebalance re-delivered)
    assert stats.applied == 4 and stats.skipped >= 1
    found = get_resource(store, "Observation", "township-1.o1")
    assert found.resource["valueQuantity"]["value"] == 7.0
    assert found.resource["subject"]["reference"] == "Patient/township-1.p1"
    assert counts(store) == {"Patient": 1, "Observation": 3}
    # the shared record needs no ledger: a repeat carries the same order key, a no-op
    row = table_digest(store, "record_resources")
    await publish(settings, [v2])
    await run_until_caught_up(settings, store, SharedRecordProjection())
    assert table_digest(store, "record_resources") == row


async def test_restart_resumes_from_stored_positions(make_settings, store):
    settings = make_settings()
    await publish(settings, [envelope(patient(f"p{i}")) for i in range(30)])
    first = await run_until_caught_up(settings, store, ActivityProjection())
    assert first.applied == 30
    await publish(settings, [envelope(observation(f"o{i}", pid="p1")) for i in range(12)])
    second = await run_until_caught_up(settings, store, ActivityProjection())
    assert second.applied == 12
    assert counts(store) == {"Patient": 30, "Observation": 12}


class Fragile(ActivityProjection):
    """Raises on one event, as a projection bug or a poison event would."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.attempts = 0

    def apply(self, events: Sequence[Event]) -> list[Change]:
        if any(e.id == self.poison for e in events):
            self.attempts += 1
            raise ValueError("cannot fold this one")
        return super().apply(events)


async def test_poison_event_is_retried_then_dead_lettered(make_settings, store):
    settings = make_settings(max_retries=2)
    good = [envelope(patient(f"p{i}")) for i in range(5)]
    bad = envelope(observation("poison", pid="p1"))
    await publish(settings, [*good[:2], bad, *good[2:]])
    proj = Fragile(bad.id)
    stats = await run_until_caught_up(settings, store, proj)
    assert stats.deadlettered == 1 and stats.applied == 5
    assert proj.attempts >= 3  # batch retries, then one-by-one retries
    assert counts(store) == {"Patient": 5}
    dead = await read_deadletters(settings, 10)
    assert len(dead) == 1
    assert dead[0]["stage"] == "projection:activity"
    assert "ValueError: cannot fold this one" in dead[0]["reason"]
    assert orjson.loads(dead[0]["value"])["id"] == "poison"  # the original bytes, kept
    again = await run_until_caught_up(settings, store, proj)
    assert again.applied == 0 and again.deadlettered == 0
    [kept] = list_dead_letters(store)  # in SQL too, in the transaction that moved past it
    row = get_dead_letter(store, kept.id)
    assert (row.entry, row.reason, row.event_id, row.subject, row.patient_key) == (
        "projection:activity", "apply-failed", bad.id, "Observation/poison", "township-1.p1")
    assert row.original == bad.data and "ValueError: cannot fold this one" in row.detail
    assert row.published


async def test_a_record_that_is_no_event_is_one_dead_letter_for_every_projection(
        make_settings, store):
    settings = make_settings()
    await publish(settings, [envelope(patient("p1"))])
    pub = await Publisher(settings).start()
    try:
        await pub.publish_raw(settings.topics.events, [(b"k", b"\x00junk", [("x", b"1")])])
    finally:
        await pub.stop()
    for proj in (ActivityProjection(), SharedRecordProjection()):  # both meet the record
        await run_until_caught_up(settings, store, proj)
    [kept] = list_dead_letters(store)
    row = get_dead_letter(store, kept.id)
    assert (row.reason, row.original, row.key, row.headers) == (
        "bad-envelope", b"\x00junk", b"k", (("x", b"1"),))
    assert "missing CloudEvents header(s)" in row.detail


async def test_rebuild_from_journal_equals_live_processing(make_settings, store):
    settings = make_settings()
    batch = [envelope(patient(f"p{i}")) for i in range(20)]
    batch += [envelope(observation(f"o{i}", pid=f"p{i % 20}", value=i)) for i in range(60)]
    batch += [envelope(observation("o1", pid="p1", value=99, version=2,
                                   updated="2026-11-02T08:00:00+08:00"))]
    batch += [envelope(observation("o2", pid="p2"), action="delete")]
    await publish(settings, batch)
    for proj in (JournalProjection(), SharedRecordProjection(), ActivityProjection()):
        await run_until_caught_up(settings, store, proj)
    live = {t: table_digest(store, t) for t in ("record_resources", "activity_counts")}
    assert live["record_resources"][0] == 80
    assert rebuild(store, SharedRecordProjection()) == len(batch)
    assert rebuild(store, ActivityProjection()) == len(batch)
    assert {t: table_digest(store, t) for t in live} == live
    # after the swap the live runners pick up where the rebuild stopped, once
    await publish(settings, [envelope(patient("late"))])
    for proj in (SharedRecordProjection(), ActivityProjection()):
        stats = await run_until_caught_up(settings, store, proj)
        assert stats.applied == 1
    assert counts(store)["Patient"] == 21


async def test_rebuild_while_live_runner_keeps_running(make_settings, store):
    settings = make_settings()
    await publish(settings, [envelope(patient(f"p{i}")) for i in range(50)])
    pub = await Publisher(settings).start()
    journal = ProjectionRunner(settings, store, JournalProjection(), pub)
    live = ProjectionRunner(settings, store, ActivityProjection(), pub)
    tasks = [asyncio.create_task(r.run()) for r in (journal, live)]
    try:
        for _ in range(300):
            if journal.stats.applied == 50 and live.stats.applied == 50:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(rebuild, store, ActivityProjection())
        await publish(settings, [envelope(patient(f"q{i}")) for i in range(10)])
        for _ in range(300):
            if counts(store).get("Patient") == 60 and journal.stats.applied == 60:
                break
            await asyncio.sleep(0.1)
    finally:
        for r in (journal, live):
            r.stop()
        await asyncio.gather(*tasks)
        await pub.stop()
    assert counts(store) == {"Patient": 60}


async def test_replicas_in_one_consumer_group_share_the_partitions(make_settings, store):
    """Two runners of one projection in one group, as two hub replicas would run: each gets
    some partitions, and every event is applied once in all."""
    settings = make_settings(consumer_groups=True)
    events = [envelope(patient(f"p{i}"), facility=f"township-{1 + i % 4}") for i in range(90)]
    await publish(settings, events)
    pub = await Publisher(settings).start()
    runners = [ProjectionRunner(settings, store, ActivityProjection(), pub) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        async def shared() -> bool:
            held = [r._consumer.assignment() if r._consumer else set() for r in runners]
            return all(held) and sum(r.stats.applied for r in runners) == len(events)

        for _ in range(300):
            if await shared():
                break
            await asyncio.sleep(0.1)
        held = [r._consumer.assignment() for r in runners]
        assert all(held) and not held[0] & held[1], held
        assert sum(r.stats.applied for r in runners) == len(events)
    finally:
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
        await pub.stop()
    with store.connect() as conn:
        total = conn.execute(sa.text("SELECT SUM(events) FROM activity_counts")).scalar_one()
    assert total == len(events)


async def test_a_runner_on_its_own_loop_reports_home_stops_and_restarts(make_settings, store):
    """The journal's way of running (``run_on_own_loop``): commits are reported on the
    caller's loop, a poison event's dead letter goes out through the caller's publisher,
    stop() from the caller's loop ends it, and a second run (a supervisor's restart) on a
    fresh loop carries on from the stored positions."""
    import threading

    settings = make_settings(max_retries=1)
    bad = envelope(observation("poison", pid="p1"))
    await publish(settings, [envelope(patient(f"p{i}")) for i in range(3)] + [bad])
    home = threading.get_ident()
    reported: list[tuple[int, int]] = []
    pub = await Publisher(settings).start()
    try:
        runner = ProjectionRunner(settings, store, Fragile(bad.id), pub,
                                  on_commit=lambda evs, _: reported.append(
                                      (threading.get_ident(), len(evs))))

        # Twice until caught up, each run on a fresh loop (as a supervisor's restart).
        first = await asyncio.wait_for(runner.run_on_own_loop(until_caught_up=True), 90)
        assert (first.applied, first.deadlettered) == (3, 1)
        await publish(settings, [envelope(patient(f"q{i}")) for i in range(5)])
        second = await asyncio.wait_for(runner.run_on_own_loop(until_caught_up=True), 90)
        assert (second.applied, second.deadlettered) == (8, 1)  # the stats are the runner's
        # Then live, stopped from this loop once it has applied what came meanwhile.
        task = asyncio.ensure_future(runner.run_on_own_loop())
        await publish(settings, [envelope(patient("r1"))])
        while runner.stats.applied < 9:
            await asyncio.sleep(0.05)
        assert await runner.caught_up()
        runner.stop()
        assert (await asyncio.wait_for(task, 30)).applied == 9
        assert reported and {t for t, _ in reported} == {home}
        assert counts(store) == {"Patient": 9}
        [letter] = await read_deadletters(settings, 10)
        assert letter["stage"] == "projection:activity"
    finally:
        await pub.stop()
