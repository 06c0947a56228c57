"""Scale-out on containers: deploy/docker-compose.yml with its local override (broker,
PostgreSQL, two gateways, one ingest stage, three projection processes in one consumer group)
under load through both gateways. One projection replica, the one holding the patient
index's lease, is killed mid-stream: its partitions go to the other two, the lease to a live
replica, decisions continue; it is restarted; every acknowledged event is applied exactly
once (the tables equal a rebuild from the journal). Then the broker container restarts
empty. Prints the figures the README's capacity note is built from."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import date, timedelta

import httpx
import pytest
import sqlalchemy as sa

from hub.envelope import HUB_SOURCE
from hub.store.db import open_store
from tests.support.checks import table_digest
from tests.support.compose import ComposeProject
from tests.support.hub_server import auth
from tests.support.resources import bundle, observation

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.timeout(600)]

FACILITIES = ["city-1", "county-1", "township-1", "township-2", "community-1"]
FAMILIES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "秀英桂兰玉梅建华志强国庆明丽淑珍海燕红霞春生德福文杰宏伟子涵雨轩"
PATIENTS_PER_BUNDLE = 10
PROJECTION_REPLICAS = ["projections-1", "projections-2", "projections-3"]
SERVICES = ["gateway-1", "gateway-2", *PROJECTION_REPLICAS, "kafka", "postgres"]
JOURNAL_ROWS = "SELECT count(*) FROM hub_journal"


def cpu_of(project: ComposeProject) -> dict[str, float]:
    return {s: project.cpu_seconds(s) for s in SERVICES}


def resident(n: int) -> dict:
    """A patient nobody else resembles: distinct name, birth date and record number, so the
    patient index decides a new person for each (a decision made by the lease holder)."""
    return {"resourceType": "Patient", "id": f"s{n}",
            "identifier": [{"system": "urn:hie:facility:x:mrn", "value": f"SC{n:07d}"}],
            "name": [{"family": FAMILIES[n % 20],
                      "given": [GIVEN[n // 20 % len(GIVEN)] + GIVEN[n // 640 % len(GIVEN)]]}],
            "gender": ("female", "male")[n % 2],
            "birthDate": (date(1940, 1, 1) + timedelta(days=n * 7)).isoformat()}


class Load:
    """Bundles of new patients with two lab results each, through both gateways at a fixed
    number of requests in flight; remembers what each gateway acknowledged."""

    def __init__(self, gateways: list[str]) -> None:
        self.gateways = gateways
        self.acked: dict[str, list[str]] = {g: [] for g in gateways}
        self.patients: list[tuple[float, str]] = []  # (acknowledged at, hub id)
        self.answers: Counter[int | str] = Counter()
        self.next = 0
        self.stop = asyncio.Event()

    async def run(self, in_flight: int = 3) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(self._send(client, g, i) for g in self.gateways
                                   for i in range(in_flight)))

    async def _send(self, client: httpx.AsyncClient, gateway: str, lane: int) -> None:
        while not self.stop.is_set():
            first, self.next = self.next, self.next + PATIENTS_PER_BUNDLE
            facility = FACILITIES[(first // PATIENTS_PER_BUNDLE) % len(FACILITIES)]
            resources = []
            for n in range(first, first + PATIENTS_PER_BUNDLE):
                resources += [resident(n), observation(f"s{n}a", f"s{n}", 5.0 + n % 7),
                              observation(f"s{n}b", f"s{n}", 6.0 + n % 5)]
            try:
                r = await client.post(f"{gateway}/fhir", json=bundle("batch", *resources),
                                      headers=auth(f"CHANGE-ME-{facility}"))
            except httpx.HTTPError:
                self.answers[0] += 1
                await asyncio.sleep(0.5)
                continue
            self.answers[r.status_code] += 1
            if r.status_code != 200:
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            for e in r.json()["entry"]:
                if e["response"]["status"] != "201 Created":  # shown in the answers
                    self.answers[e["response"]["status"]] += 1
                    continue
                rid = e["response"]["location"]
                self.acked[gateway].append(rid)
                if rid.startswith("Patient/"):
                    self.patients.append((now, rid.split("/")[1]))


class Watch:
    """Samples the journal's stored position per partition (the hub's own progress record)
    and the patient index's lease, every 0.2 s."""

    def __init__(self, db_url: str) -> None:
        self.store = open_store(db_url)
        self.positions: list[tuple[float, dict[int, int]]] = []
        self.stop = asyncio.Event()

    def sample(self) -> dict[int, int]:
        with self.store.connect() as conn:
            return dict(conn.execute(sa.text(
                "SELECT partition, \"offset\" FROM hub_positions WHERE consumer = "
                "'projection:journal' AND topic = 'hie.events.v1'")).all())

    async def run(self) -> None:
        while not self.stop.is_set():
            self.positions.append((time.monotonic(), await asyncio.to_thread(self.sample)))
            await asyncio.sleep(0.2)

    def longest_stall(self, start: float, end: float) -> float:
        """The longest a partition's position stood still between ``start`` and ``end``
        (the load keeps every partition busy, so standing still is waiting for an owner)."""
        worst = 0.0
        partitions = {p for _, pos in self.positions for p in pos}
        for p in partitions:
            last_change, last = start, None
            for t, pos in self.positions:
                if t < start or t > end or p not in pos:
                    continue
                if last is not None and pos[p] != last:
                    worst = max(worst, t - last_change)
                    last_change = t
                last = pos[p]
            worst = max(worst, min(end, self.positions[-1][0]) - last_change)
        return worst

    def column(self, sql: str) -> set:
        with self.store.connect() as conn:
            return set(conn.execute(sa.text(sql)).scalars())

    def scalar(self, sql: str):
        with self.store.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.25)


def lease_holder(watch: Watch) -> str | None:
    return watch.scalar("SELECT holder FROM hub_leases WHERE name = 'mpi-writer' AND "
                        "expires >= extract(epoch from now())")


def caught_up(watch: Watch, log_end: dict[int, int]) -> bool:
    with watch.store.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT consumer, partition, \"offset\" FROM hub_positions "
            "WHERE topic = 'hie.events.v1'")).all()
    by_consumer: dict[str, dict[int, int]] = {}
    for consumer, partition, offset in rows:
        by_consumer.setdefault(consumer, {})[partition] = offset
    return len(by_consumer) >= 8 and all(
        pos.get(p, -1) >= end - 1 for pos in by_consumer.values()
        for p, end in log_end.items() if end > 0)


def log_end_offsets(bootstrap: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        parts = [TopicPartition("hie.events.v1", p)
                 for p in consumer.partitions_for_topic("hie.events.v1") or ()]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


async def test_a_projection_replica_killed_mid_stream_loses_and_doubles_nothing():
    with ComposeProject() as project:
        await asyncio.to_thread(project.wait_ready)
        watch = Watch(project.db_url())
        await until(lambda: lease_holder(watch), 90, "a replica takes the lease")
        load = Load(project.gateways)
        tasks = [asyncio.create_task(load.run()), asyncio.create_task(watch.run())]
        try:
            await asyncio.sleep(3)  # warm-up
            steady_from, acked_before = time.monotonic(), sum(map(len, load.acked.values()))
            per_gateway_before = {g: len(a) for g, a in load.acked.items()}
            cpu_before = await asyncio.to_thread(cpu_of, project)
            journal_before = await asyncio.to_thread(watch.scalar, JOURNAL_ROWS)
            await asyncio.sleep(8)
            steady = time.monotonic() - steady_from
            cpu = {s: c - cpu_before[s] for s, c in (await asyncio.to_thread(
                cpu_of, project)).items()}
            applied = await asyncio.to_thread(watch.scalar, JOURNAL_ROWS) - journal_before
            gateway_acked = {g: len(a) - per_gateway_before[g] for g, a in load.acked.items()}
            gateway_rates = {g: n / steady for g, n in gateway_acked.items()}
            acked = sum(map(len, load.acked.values())) - acked_before
            acked_rate = acked / steady

            # Whoever holds the lease now (under load it can change hands).
            holder = await until(lambda: lease_holder(watch), 30, "a replica holds the lease")
            victim = holder.split(":")[0]
            assert victim in PROJECTION_REPLICAS, holder
            killed_at = time.monotonic()
            await asyncio.to_thread(project.docker, "kill", project.container(victim))
            moved = await until(
                lambda: (h := lease_holder(watch)) and not h.startswith(f"{victim}:") and h,
                60, "the patient index's lease moves to a live replica")
            moved_after = time.monotonic() - killed_at
            assert moved.split(":")[0] in PROJECTION_REPLICAS
            decided_at_move = watch.scalar("SELECT count(*) FROM mpi_decided")
            # Patients acknowledged from now on are decided by the new holder only.
            after_move = len(load.patients)
            await asyncio.sleep(max(0.0, 18 - (time.monotonic() - killed_at)))
            restarted_at = time.monotonic()
            state = await asyncio.to_thread(project.docker, "inspect", "-f",
                                            "{{.State.Running}}", project.container(victim))
            assert state.strip() == "false", "the killed replica came back by itself"
            await asyncio.to_thread(project.docker, "start", project.container(victim))
            await asyncio.sleep(12)
        finally:
            load.stop.set()
            await asyncio.gather(*tasks[:1])
        end = time.monotonic()
        watch.stop.set()
        await tasks[1]

        kill_pause = watch.longest_stall(killed_at, restarted_at)
        rejoin_pause = watch.longest_stall(restarted_at, end)
        log_end = await asyncio.to_thread(log_end_offsets, project.bootstrap)
        await until(lambda: caught_up(watch, log_end), 120, "every projection catches up")

        # Every acknowledged resource is in the shared record, and every Patient the log
        # holds has been decided, those acknowledged after the lease moved included.
        acked_ids = {rid.split("/")[1] for a in load.acked.values() for rid in a}
        with watch.store.connect() as conn:
            undecided = conn.execute(sa.text(
                "SELECT count(*) FROM mpi_record r LEFT JOIN mpi_decided d "
                "ON r.record_key = d.record_key WHERE d.record_key IS NULL")).scalar()
            journaled = conn.execute(sa.text("SELECT count(*) FROM hub_journal")).scalar()
            from_facilities = conn.execute(sa.text(
                "SELECT count(*) FROM hub_journal WHERE source <> :hub"), {"hub": HUB_SOURCE}
            ).scalar()
            counted = conn.execute(sa.text("SELECT sum(events) FROM activity_counts")).scalar()
        record = watch.column("SELECT id FROM record_resources")
        assert acked_ids <= record, f"{len(acked_ids - record)} acknowledged resources missing"
        assert len(load.patients) > after_move, "no patient was acknowledged after the move"
        await until(lambda: watch.scalar("SELECT count(*) FROM mpi_decided") > decided_at_move
                    and not watch.scalar(
                        "SELECT count(*) FROM mpi_record r LEFT JOIN mpi_decided d "
                        "ON r.record_key = d.record_key WHERE d.record_key IS NULL"),
                    60, f"the new holder decides every patient ({undecided} undecided)")
        # Exactly once: the counters (which a doubled event would inflate) count every
        # facility event of the journal once, and the live tables equal a rebuild from it.
        assert counted == from_facilities
        live = {t: table_digest(watch.store, t) for t in ("record_resources", "activity_counts")}
        for name in ("shared_record", "activity"):
            await asyncio.to_thread(project.docker, "exec", project.container("projections-1"),
                                    "hub", "rebuild", name)
        assert {t: table_digest(watch.store, t) for t in live} == live

        # The image's healthcheck (/ready on HUB_API_PORT) as Docker sees it.
        for gateway in ("gateway-1", "gateway-2"):
            health = await asyncio.to_thread(project.docker, "inspect", "-f",
                                             "{{.State.Health.Status}}", project.container(gateway))
            assert health.strip() == "healthy", (gateway, health)
        event_bytes = watch.scalar("SELECT avg(octet_length(data)) FROM hub_journal")
        db_bytes = watch.scalar("SELECT pg_database_size('hub')")
        cpu_measure = await asyncio.to_thread(project.cpu_seconds, "projections-1")
        replica_rate, replica_events = await one_replica_rate(project, sum(log_end.values()))
        cpu_measure = await asyncio.to_thread(project.cpu_seconds, "projections-1") - cpu_measure
        broker_restart = await restart_the_broker(project, watch, load)
        watch.store.dispose()

    group_cpu = sum(cpu[s] for s in PROJECTION_REPLICAS)
    print(f"\nsteady phase, {steady:.0f} s: {acked} resources acknowledged, {applied} events "
          f"journaled; CPU-seconds used {({s: round(c, 1) for s, c in cpu.items()})}")
    print("per CPU-second: gateways " + ", ".join(
              f"{gateway_acked[g] / cpu[s]:.0f}"
              for g, s in zip(load.gateways, SERVICES, strict=False))
          + f" resources acknowledged; projection group {applied / group_cpu:.0f}, broker "
          f"{applied / cpu['kafka']:.0f}, PostgreSQL {applied / cpu['postgres']:.0f} events")
    print(f"sizes: {event_bytes:.0f} bytes per event on the log (payload), "
          f"{db_bytes / journaled:.0f} bytes of PostgreSQL (every table, indexes) per event")
    print(f"scale-out figures: {len(acked_ids)} resources acknowledged "
          f"({acked_rate:.0f}/s through both gateways, "
          f"{', '.join(f'{r:.0f}/s' for r in gateway_rates.values())} per gateway, "
          f"3 requests of {PATIENTS_PER_BUNDLE * 3} resources in flight each); answers "
          f"{dict(load.answers)}; journal {journaled} events")
    print(f"kill: partitions of the killed replica stood still {kill_pause:.1f} s (the "
          f"rebalance pause); the lease moved after {moved_after:.1f} s; its restart "
          f"stalled partitions {rejoin_pause:.1f} s")
    print(f"one projection process (all 8 projections, PostgreSQL): {replica_rate:.0f} "
          f"events/s catching up the log alone, {replica_events / cpu_measure:.0f} events "
          f"per CPU-second of its container")
    print(f"broker container restarted: {broker_restart}")


async def one_replica_rate(project: ComposeProject, events: int) -> tuple[float, int]:
    """One projection process alone (no group: it reads every partition) catching up the
    whole log into an empty database: events per second, timed on its journal's rows."""
    admin = sa.create_engine(project.db_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE measure"))
    admin.dispose()
    url = f"postgresql://postgres@127.0.0.1:{project.pg_port}/measure"
    # A second process in a replica's container: the same image, settings and keys.
    run = asyncio.create_task(asyncio.to_thread(
        project.docker, "exec", "-e", f"HUB_DATABASE_URL={url}",
        "-e", "HUB_CONSUMER_GROUPS=false", "-e", "HUB_GROUP_PREFIX=measure",
        "-e", "HUB_REPLICA_NAME=measure", project.container("projections-1"),
        "hub", "project", "--until-caught-up"))
    store = open_store(project.db_url("measure"))
    samples: list[tuple[float, int]] = []
    while not run.done():
        try:
            with store.connect() as conn:
                n = conn.execute(sa.text("SELECT count(*) FROM hub_journal")).scalar()
            samples.append((time.monotonic(), n))
        except Exception:  # the process has not created its tables yet
            pass
        await asyncio.sleep(0.2)
    await run
    store.dispose()
    moving = [(t, n) for t, n in samples if n > 0]
    assert moving and moving[-1][1] >= events * 0.9, (events, samples[-3:])
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / max(t1 - t0, 0.2), n1


async def restart_the_broker(project: ComposeProject, watch: Watch, load: Load) -> str:
    """The memory-only broker restarted: its log, topics and consumer groups are gone. The
    hub's processes re-create the topics and rejoin; new events are acknowledged and
    applied; what PostgreSQL held stays."""
    before = watch.scalar("SELECT count(*) FROM record_resources")
    restarted = time.monotonic()
    await asyncio.to_thread(project.docker, "restart", "-t", "0", project.container("kafka"))
    load.stop.clear()
    fresh = Load(project.gateways)
    fresh.next = load.next
    task = asyncio.create_task(fresh.run(in_flight=1))
    try:
        try:
            await until(lambda: any(fresh.acked.values()), 120,
                        "an event acknowledged after the broker restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; answers {dict(fresh.answers)}\n{project.logs()}"
                                 ) from None
        first_ack = time.monotonic() - restarted
        ids = {rid.split("/")[1] for a in fresh.acked.values() for rid in a[:10]}
        await until(lambda: ids <= watch.column("SELECT id FROM record_resources"), 180,
                    "events after the broker restart are applied")
        applied = time.monotonic() - restarted
    finally:
        fresh.stop.set()
        await task
    assert watch.scalar("SELECT count(*) FROM record_resources") >= before
    topic_ids = watch.scalar("SELECT count(DISTINCT topic_id) FROM hub_positions "
                             "WHERE consumer = 'projection:journal'")
    assert topic_ids == 2  # positions of both log incarnations, kept apart by topic id
    return (f"first acknowledgement {first_ack:.1f} s after the restart, applied by the "
            f"projection group after {applied:.1f} s; answers meanwhile {dict(fresh.answers)}")
