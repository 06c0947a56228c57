"""Outages survived: a broker killed and restarted empty, a locked database, a component
that dies. Real broker processes (SIGKILL), real hub processes, a real SQLite file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from hub import service
from hub.deadletters.read import list_dead_letters
from hub.engine.runner import ProjectionRunner
from hub.errors import StoreError
from hub.journal import JournalProjection
from hub.log.broker import EmbeddedBroker, free_port
from hub.log.producer import Publisher
from hub.log.topics import topic_identity
from hub.metrics import COMPONENT_RESTARTS
from hub.service import Hub
from hub.store.db import BUSY_ENV, open_store
from tests.support.events import envelope, publish
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.proc import hub_env, spawn
from tests.support.resources import patient
from tests.support.stores import drop_schema, postgres_schema_url
from tests.support.tcp_proxy import CuttableProxy

pytestmark = [pytest.mark.e2e]


def ids_in(db_url: str, table: str, column: str) -> set[str]:
    store = open_store(db_url)
    try:
        with store.connect() as conn:
            return set(conn.execute(sa.text(f"SELECT {column} FROM {table}")).scalars())
    except StoreError:  # the hub processes have not created the tables yet
        return set()
    finally:
        store.dispose()


async def wait_for_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> None:
    """Until someone (a hub process) has re-created ``topic`` on a restarted broker."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(topic_identity, bootstrap, topic, 2.0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def stop(proc: subprocess.Popen, within: float = 20.0) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=within)
    return out


@pytest.mark.parametrize("groups", [False, True], ids=["alone", "consumer-groups"])
async def test_broker_killed_and_restarted_split_processes_resume(make_settings, tmp_path,
                                                                   groups):
    # With consumer groups (replicas), the restarted broker has forgotten the groups too:
    # the processes must rejoin, not loop on UnknownMemberId.
    with EmbeddedBroker(free_port(), tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, consumer_groups=groups,
                                 session_timeout_ms=3000 if groups else 6000)
        db_url = f"sqlite:///{tmp_path / 'hub.db'}"
        env = hub_env(settings, db_url, HUB_BATCH_MAX_RECORDS="50",
                      HUB_EVENTS_PARTITIONS=str(settings.events_partitions))
        ingest = spawn("ingest", env=env)
        project = spawn("project", "journal", "shared_record", env=env)
        try:
            before = [envelope(patient(f"b{i}")) for i in range(150)]
            await publish(settings, before, topic=settings.topics.inbound)
            await eventually(lambda: _has(db_url, {e.id for e in before}), 40)

            broker.kill()  # SIGKILL: the log, the topics and the group offsets are gone
            await asyncio.sleep(1.0)
            broker.start()
            # Nobody creates the topics but the hub processes that need them.
            await wait_for_topic(broker.bootstrap, settings.topics.inbound)
            # With the hub's partition count (a producer's auto-create would take the
            # broker's default).
            _, parts = topic_identity(broker.bootstrap, settings.topics.events)
            assert parts == settings.events_partitions

            after = [envelope(patient(f"a{i}")) for i in range(150)]
            for i in range(0, len(after), 15):  # a trickle, ~100 events/s
                await publish(settings, after[i:i + 15], topic=settings.topics.inbound)
                await asyncio.sleep(0.15)
            await eventually(lambda: _has(db_url, {e.id for e in after}), 40)
            # The shared record is a runner of its own: with consumer groups it rejoins its
            # group on its own schedule (a session timeout after the journal, at worst), so
            # it is waited for too, not read the moment the journal has everything.
            await eventually(lambda: _record_has(db_url, {f"a{i}" for i in range(150)}), 40)
            assert ingest.poll() is None and project.poll() is None, "a process exited"
        finally:
            outs = [stop(p) for p in (ingest, project)]
            print(*outs, sep="\n----\n")  # shown when the test fails
        # SIGTERM ended both promptly (communicate() would have raised after 20 s).
        assert all(p.returncode is not None for p in (ingest, project)), outs
        store = open_store(db_url)
        try:
            assert list_dead_letters(store, limit=10) == []
        finally:
            store.dispose()


async def _has(db_url: str, wanted: set[str]) -> bool:
    return wanted <= await asyncio.to_thread(ids_in, db_url, "hub_journal", "event_id")


async def _record_has(db_url: str, wanted: set[str]) -> bool:
    # Shared-record ids are hub ids: the facility's id after its own prefix.
    ids = await asyncio.to_thread(ids_in, db_url, "record_resources", "id")
    return wanted <= {i.rsplit(".", 1)[-1] for i in ids}


async def test_locked_database_is_waited_out_not_dead_lettered(make_settings, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv(BUSY_ENV, "200")  # a held lock fails a write after 0.2 s
    settings = make_settings()
    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}")
    publisher = await Publisher(settings).start()
    runner = ProjectionRunner(settings, store, JournalProjection(), publisher)
    task = asyncio.create_task(runner.run())
    try:
        first = [envelope(patient(f"f{i}")) for i in range(20)]
        await publish(settings, first)
        await eventually(lambda: _async(runner.stats.applied >= 20), 30)

        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every writer now fails with "database is locked"
        try:
            second = [envelope(patient(f"s{i}")) for i in range(30)]
            await publish(settings, second)
            await asyncio.sleep(4.0)
            assert runner.stats.applied == 20, "applied through an exclusive lock?"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await eventually(lambda: _async(runner.stats.applied >= 50), 30)
        assert runner.stats.deadlettered == 0
        assert list_dead_letters(store, limit=10) == []
        assert not task.done()
    finally:
        runner.stop()
        await asyncio.wait_for(task, 15)
        await publisher.stop()
        store.dispose()


async def _async(value: bool) -> bool:
    return value


async def test_ready_follows_the_broker_and_health_stays(make_settings, tmp_path: Path):
    with EmbeddedBroker(free_port(), tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, api_port=free_port(),
                                 database_url=f"sqlite:///{tmp_path / 'ready.db'}")
        async with Hub(settings, start_broker=False) as hub:
            hub.start_api()
            hub.start_projections(["journal"])
            await hub.api_ready()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api_port}",
                                         timeout=10) as c:
                async def ready_is(code: int) -> bool:
                    return (await c.get("/ready")).status_code == code

                await eventually(lambda: ready_is(200), 20)
                body = (await c.get("/ready")).json()
                assert body["broker"] and body["store"] and "journal_lag_events" in body
                assert body["components"]["projection:journal"] == "running"

                broker.kill()
                await eventually(lambda: ready_is(503), 10)
                assert (await c.get("/ready")).json()["broker"] is False
                assert (await c.get("/health")).status_code == 200

                broker.start()
                await eventually(lambda: ready_is(200), 20)
                assert (await c.get("/health")).status_code == 200
                # The journal runner is still the one started above, and it works again.
                await publish(settings, [envelope(patient("r1"))])
                await eventually(lambda: _async(hub.runners[0].stats.applied >= 1), 20)


async def test_supervisor_restarts_a_component_that_raised(make_settings, monkeypatch):
    monkeypatch.setattr(service, "RESTART_FIRST_PAUSE", 0.05)
    hub = Hub(make_settings(), start_broker=False)  # only the supervisor is exercised
    runs = 0

    async def flaky() -> str:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        return "finished"

    before = COMPONENT_RESTARTS.labels("flaky")._value.get()
    assert await asyncio.wait_for(hub._supervised("flaky", flaky), 10) == "finished"
    assert runs == 3
    assert COMPONENT_RESTARTS.labels("flaky")._value.get() - before == 2
    assert hub.components["flaky"] == "done"


@pytest.mark.postgres
async def test_postgres_outage_is_ridden_out_and_loses_nothing_acknowledged(make_settings):
    """PostgreSQL becomes unreachable for a few seconds (a proxy in front of the machine's
    server is cut): the gateway answers 503, never 2xx, while the journal cannot commit;
    /ready says so; nothing is dead-lettered; afterwards every resource answered 2xx is
    served, and no part of the hub died."""
    found = postgres_schema_url()
    if found is None:
        pytest.skip("no PostgreSQL reachable at HUB_TEST_POSTGRES_URL / 127.0.0.1:5432 (db test)")
    url, schema = found
    real = sa.engine.make_url(url)
    proxy = await CuttableProxy(real.host or "127.0.0.1", real.port or 5432).start()
    settings = make_settings(database_url=real.set(port=proxy.port).render_as_string(False),
                             ack_timeout_s=2.0)
    token = "demo-secret-township-1"
    accepted: list[str] = []
    try:
        async with running_hub(settings) as (hub, base):
            async with httpx.AsyncClient(base_url=base, headers=auth(token),
                                         timeout=30) as c:
                async def put(i: int) -> int:
                    r = await c.put(f"/fhir/Patient/pg{i}", json=patient(f"pg{i}"))
                    if r.status_code in (200, 201):
                        accepted.append(f"pg{i}")
                    return r.status_code

                assert {await put(i) for i in range(10)} <= {200, 201}
                await proxy.cut()
                during = [await put(i) for i in range(10, 15)]
                assert set(during) == {503}, during
                assert (await c.get("/ready")).status_code == 503
                await asyncio.sleep(2)
                await proxy.restore()

                async def back() -> bool:
                    return await put(100 + len(accepted)) in (200, 201)

                await eventually(back, 30)
                codes = [await put(i) for i in range(200, 210)]
                assert set(codes) <= {200, 201}, codes

                async def served() -> bool:
                    found = [(await c.get(f"/fhir/Patient/township-1.{p}")).status_code
                             for p in accepted]
                    return set(found) == {200}

                await eventually(served, 45)
                assert (await c.get("/ready")).status_code == 200
            # (the registry watch is "done" at once: the bundled consortium file never changes)
            assert set(hub.components.values()) <= {"running", "done"}, hub.components
            # In a thread: the proxy runs on this event loop.
            assert await asyncio.to_thread(list_dead_letters, hub.store, limit=10) == []
    finally:
        await proxy.cut()
        drop_schema(schema)
