"""kill -9 at every stage, restart, and every event is applied exactly once.

The activity projection counts events, so a doubled or lost event shows as a wrong count;
the shared record and activity tables must also equal a from-scratch rebuild.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time

import pytest
import sqlalchemy as sa

from hub.activity.projection import ActivityProjection
from hub.deadletters.read import list_dead_letters
from hub.engine.rebuild import rebuild
from hub.engine.runner import ProjectionRunner
from hub.journal import JournalProjection
from hub.log.broker import EmbeddedBroker, free_port
from hub.log.producer import Publisher
from hub.log.topics import ensure_topics
from hub.record.projection import SharedRecordProjection
from hub.registry.consortium_file import read_consortium
from hub.store.db import open_store
from tests.support.checks import table_digest
from tests.support.events import envelope, publish
from tests.support.proc import hub, hub_env, spawn
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def workload(n_patients: int = 150) -> list:
    rng = random.Random(11)
    out = [envelope(patient(f"p{i}"), facility=f"township-{1 + i % 4}")
           for i in range(n_patients)]
    for i in range(n_patients * 8):
        oid = i % (n_patients * 4)
        pid = oid % n_patients  # an observation stays with its patient
        version = rng.randint(1, 4)
        out.append(envelope(observation(f"o{oid}", pid=f"p{pid}", value=i, version=version,
                                        updated=f"2026-11-0{version}T08:00:00+08:00"),
                            facility=f"township-{1 + pid % 4}"))
    return out


def total_events(store) -> int:
    with store.connect() as conn:
        return int(conn.execute(sa.text("SELECT COALESCE(SUM(events), 0) FROM activity_counts")
                                ).scalar_one())


@pytest.mark.parametrize("crash_at", [
    "before_apply:3", "before_store_commit:2", "before_store_commit:7", "after_store_commit:4",
])
async def test_projection_process_killed_at_each_stage(make_settings, store_url, crash_at):
    # One case as replicas run (a consumer group, whose dead member holds its partitions
    # until its session times out); the others as a hub alone, reading every partition.
    grouped = crash_at == "after_store_commit:4" and store_url.startswith("sqlite")
    # A short session: the killed member's partitions move on once it times out.
    settings = make_settings(consumer_groups=grouped,
                             session_timeout_ms=3000 if grouped else 6000)
    events = workload()
    await publish(settings, events)
    duplicates = random.Random(5).sample(events, 40)
    await publish(settings, duplicates)  # re-delivered events must not count twice
    env = hub_env(settings, store_url, HUB_BATCH_MAX_RECORDS="150")

    crashed = hub("project", "--until-caught-up", env={**env, "HUB_CRASH_AT": crash_at})
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    # A second, hard kill (SIGKILL) at an arbitrary moment while it is applying.
    proc = spawn("project", env={**env, "HUB_BATCH_MAX_RECORDS": "10"})
    store = open_store(store_url)
    try:
        before = total_events(store)
        deadline = time.monotonic() + 60
        while total_events(store) <= before and time.monotonic() < deadline:
            time.sleep(random.Random(crash_at).uniform(0.01, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert before < total_events(store) < len(events), "the kill was not mid-stream"
    finally:
        store.dispose()
    done = hub("project", "--until-caught-up", env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    store = open_store(store_url)
    try:
        assert total_events(store) == len(events) == len({e.id for e in events + duplicates})
        live = {t: table_digest(store, t) for t in ("record_resources", "activity_counts")}
        rebuild(store, SharedRecordProjection())
        rebuild(store, ActivityProjection())
        assert {t: table_digest(store, t) for t in live} == live
        with store.connect() as conn:
            journaled = conn.execute(sa.text(
                "SELECT COUNT(*) FROM hub_journal WHERE source != 'urn:hie:hub'")).scalar_one()
            registry = conn.execute(sa.text(
                "SELECT COUNT(*) FROM hub_journal WHERE source = 'urn:hie:hub'")).scalar_one()
        # The registry went to the log once, not once per restart: 18 members and the hub,
        # and each family-doctor team, signed resident and home meter.
        care = read_consortium(None).care
        entries = len(care.teams) + sum(len(t.residents) for t in care.teams) + \
            len(care.devices)
        assert registry == 19 + entries
        assert journaled == len(events)
    finally:
        store.dispose()


# With worker processes the stage checks a batch while it publishes and commits the one
# before: the crash lands with the next batch read and checked but not yet published.
@pytest.mark.parametrize("workers", ["0", "2"], ids=["inline", "worker-processes"])
async def test_ingest_stage_killed_before_commit_duplicates_nothing(make_settings, tmp_path,
                                                                    workers):
    settings = make_settings()
    db_url = f"sqlite:///{tmp_path / 'ingest.db'}"
    events = workload(40)
    # Unsigned records among them: refused, and each one dead letter in SQL even when the
    # restarted stage reads it again.
    unsigned = [dataclasses.replace(envelope(patient(f"x{i}")), signature=None)
                for i in range(len(events) // 20)]
    mixed = []
    for i, e in enumerate(events):
        mixed += [e, unsigned[i // 20]] if i % 20 == 0 else [e]
    await publish(settings, mixed, topic=settings.topics.inbound)
    env = hub_env(settings, db_url, HUB_BATCH_MAX_RECORDS="50", HUB_VALIDATION_WORKERS=workers)
    crashed = hub("ingest", env={**env, "HUB_CRASH_AT": "ingest_before_commit:2"})
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    ingest = spawn("ingest", env=env)
    try:
        for _ in range(60):
            done = hub("project", "--until-caught-up", env=env)
            store = open_store(db_url)
            try:
                if total_events(store) >= len(events):
                    break
            finally:
                store.dispose()
            time.sleep(1)
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(30)
    assert done.returncode == 0, done.stdout + done.stderr
    store = open_store(db_url)
    try:
        assert total_events(store) == len(events)
        kept = list_dead_letters(store, limit=100)
        assert sorted(r.event_id for r in kept) == sorted(e.id for e in unsigned)
        assert {r.reason for r in kept} == {"unsigned"}
    finally:
        store.dispose()


async def test_projections_catch_up_from_the_journal_when_the_log_is_gone(make_settings, store,
                                                                          tmp_path):
    """The bundled broker dies with the hub: the journal had committed events that some
    projections had not applied (activity: half of them; the shared record: none), and the
    restarted broker's log is empty. On their next start the projections take what they
    missed from the journal, once each, and equal a from-scratch rebuild."""
    events = workload(60)
    half = len(events) // 2
    with EmbeddedBroker(free_port(), tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap)
        pub = await Publisher(settings).start()

        async def caught_up(projection) -> None:
            runner = ProjectionRunner(settings, store, projection, pub)
            await asyncio.wait_for(runner.run(until_caught_up=True), 120)

        try:
            await pub.publish(settings.topics.events, events[:half])
            await caught_up(ActivityProjection())
            await pub.publish(settings.topics.events, events[half:])
            await caught_up(JournalProjection())
            assert total_events(store) == half

            await pub.stop()
            broker.kill()  # SIGKILL: the log, in memory, is gone
            broker.start()
            await asyncio.to_thread(ensure_topics, settings)
            pub = await Publisher(settings).start()
            await caught_up(ActivityProjection())
            await caught_up(SharedRecordProjection())
        finally:
            await pub.stop()
    assert total_events(store) == len(events)
    live = {t: table_digest(store, t) for t in ("record_resources", "activity_counts")}
    rebuild(store, SharedRecordProjection())
    rebuild(store, ActivityProjection())
    assert {t: table_digest(store, t) for t in live} == live
