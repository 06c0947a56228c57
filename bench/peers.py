"""``hub bench --peers``: the hub beside the tools a consortium would otherwise pick, on the
same events, on the same machine, in the same run; one table, each figure with its ratio.

1. Catch-up into the shared record: the hub's rebuild from its journal (``hub rebuild``)
   beside the ``eventsourcing`` library (bench/peer_es.py): an application storing the same
   events in SQLite, a follower folding them into the same ``record_resources`` rows.
2. Live projection from the events topic on the bundled broker, steady rate: the hub's
   projection runner beside quixstreams (bench/peer_quix.py) folding the same topic into the
   same rows, and beside a plain aiokafka consume + orjson parse loop (the Kafka-side
   ceiling: nothing stored). Target: the hub >= 0.5x the ceiling.

Every peer folds with bench.peer_fold, the hub projection's per-event work (parse, version
order, national-ID hashing), and every table is checked to hold the hub's rows. No one
validates FHIR or verifies signatures here: the ingest stage did both before the events
reached the topic or the journal, for the hub and the peers alike.

Each live consumer runs in a fresh process of its own, one after the other, on the same
topic, in two rounds (one below 10,000 events), and keeps its better one. Steady rate: the
events committed after a consumer's first commit, over the time from that commit to its
last (the group join, the first fetch and imports do not count).

The peers come with ``make bench-peers`` (or ``make bench ARGS=--peers``): eventsourcing from
the ``bench`` extra; quixstreams, whose pins exclude the hub's pydantic, in an environment
of its own beside the hub's (``.venv/quix``, bench/quix-requirements.txt). A peer that is
missing or fails is a row saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from bench.check import RatioTable
from hub.aio import run_loop
from hub.collector import settle_for_batches
from hub.config import Settings, Topics, load_settings
from hub.engine.projection import Event
from hub.engine.rebuild import rebuild
from hub.engine.runner import ProjectionRunner
from hub.envelope import Envelope
from hub.identity import identity_secret, use_identity_secret
from hub.log.broker import EmbeddedBroker, free_port
from hub.log.producer import Publisher
from hub.log.topics import ensure_topics
from hub.record.projection import SharedRecordProjection
from hub.store.db import open_store

BATCH = 2000  # records a batch, as `hub bench` runs the hub (batch_max_records)
ROUNDS = 2  # turns of the live consumers; each keeps its best (the machine is shared)

QUIX_ENV = "HUB_BENCH_QUIX_PYTHON"
INSTALL_HINT = "make bench-peers installs it"
ROWS = "SELECT resource_type, id, patient_key, order_key, body FROM record_resources " \
       "ORDER BY resource_type, id"
Marks = list[tuple[float, int]]  # (when a commit finished, events it held)


def batch_size(n: int) -> int:
    """The hub bench's batch, smaller for a short run: a steady rate needs several commits."""
    return min(BATCH, max(50, n // 10))


def steady_rate(marks: Sequence[Sequence[float]] | None) -> float | None:
    """Events after the first commit over the time from the first commit to the last; None
    with fewer than two commits (too few events to time)."""
    if not marks or len(marks) < 2 or marks[-1][0] <= marks[0][0]:
        return None
    return sum(k for _, k in marks[1:]) / (marks[-1][0] - marks[0][0])


def record_rows(db: Path) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(ROWS)]
    finally:
        engine.dispose()


def quix_python() -> Path | None:
    """quixstreams' interpreter: HUB_BENCH_QUIX_PYTHON, else the environment beside ours."""
    path = Path(os.environ.get(QUIX_ENV) or Path(sys.prefix) / "quix" / "bin" / "python")
    return path if path.exists() else None


# --- the live consumers, each in its own process -------------------------------------------

async def hub_live(settings: Settings, db: Path, count: int) -> Marks:
    """The hub's projection runner, as ``hub project`` runs it, until ``count`` applied."""
    store = open_store(f"sqlite:///{db}")
    pub = await Publisher(settings).start()
    marks: Marks = []
    applied = 0

    def on_commit(events: list[Event], _: float) -> None:
        nonlocal applied
        marks.append((time.perf_counter(), len(events)))
        applied += len(events)
        if applied >= count:
            runner.stop()

    runner = ProjectionRunner(settings, store, SharedRecordProjection(), pub, on_commit)
    settle_for_batches()  # as `hub project` does
    try:
        await asyncio.wait_for(runner.run(), 300)
    finally:
        await pub.stop()
        store.dispose()
    return marks


async def ceiling(bootstrap: str, topic: str, count: int, batch: int) -> Marks:
    """The Kafka-side ceiling: consume and parse each value with orjson, store nothing.
    The consumer settings are the runner's (fetch wait, partition fetch size, batch)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=20, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        await consumer.topics()  # the metadata, so that the partitions are known
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        marks: Marks = []
        got = 0
        deadline = time.monotonic() + 300
        while got < count and time.monotonic() < deadline:
            k = 0
            for msgs in (await consumer.getmany(timeout_ms=200, max_records=batch)).values():
                for m in msgs:
                    orjson.loads(m.value)
                k += len(msgs)
            if k:
                got += k
                marks.append((time.perf_counter(), k))
        return marks
    finally:
        await consumer.stop()


def _child(argv: list[str], console: Console, what: str) -> tuple[Marks | None, str]:
    """Run one live consumer; (its commits, "") or (None, why it did not run)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, f"{what} did not finish within 600 s"
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        console.print(f"[yellow]{what} failed (exit {done.returncode}):[/yellow]\n"
                      f"{done.stderr[-2000:]}")
        return None, f"failed: {last[:120]}"
    return json.loads(lines[-1])["commits"], ""


# --- the run -------------------------------------------------------------------------------

def run_peers(console: Console, n: int) -> RatioTable:
    # Here, not at the top: the child processes import this module and need none of it
    # (the workload brings fhir.resources along).
    from bench.workload import envelopes, fill_journal, population

    table = RatioTable(title=f"hub bench --peers ({n:,} events; one machine, same run)",
                  caption=None if n >= 10_000 else "fewer than 10,000 events: a few batches "
                  "each, so these rates say little; the figures are 20,000-event runs")
    for col in ("figure", "hub", "peer", "hub ÷ peer", "target", "same rows"):
        table.add_column(col)

    def side(rate: float | None, what: str, why: str) -> str:
        if rate is not None:
            return f"{rate:,.0f} ev/s, {what}"
        return f"{what}: {why or 'too few commits to time (run more --events)'}"

    def row(name: str, hub: float | None, hub_what: str, peer: float | None, peer_what: str,
            why_not: str = "", hub_why: str = "", target: float | None = None,
            same: bool | None = None) -> None:
        ratio = hub / peer if hub is not None and peer else None
        goal = "- (reference)" if target is None else f">= {target:g}x" if ratio is None \
            else f">= {target:g}x: " + ("[green]yes[/green]" if ratio >= target
                                         else "[red]NO[/red]")
        table.add_row(name, side(hub, hub_what, hub_why), side(peer, peer_what, why_not),
                      "-" if ratio is None else f"{ratio:.2f}x", goal,
                      "-" if same is None else "yes" if same else "[red]NO[/red]")

    with tempfile.TemporaryDirectory(prefix="hub-peers-") as tmp, \
            EmbeddedBroker(free_port()) as broker:
        workdir = Path(tmp)
        console.print(f"preparing {n:,} signed events ...")
        envs = envelopes(population(n))
        secret = identity_secret().hex()
        batch = batch_size(len(envs))
        settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=workdir,
                                 batch_max_records=batch).model_copy(update={
                                     "topics": Topics(inbound="peers.inbound",
                                                      events="peers.events",
                                                      deadletter="peers.deadletter")})
        ensure_topics(settings)
        run_loop(_publish(settings, envs))

        # 1. catch-up
        console.print("measuring the catch-up: the hub's rebuild, then eventsourcing ...")
        store = open_store(f"sqlite:///{workdir / 'journal.db'}")
        fill_journal(store, envs)
        started = time.perf_counter()
        done = rebuild(store, SharedRecordProjection())
        hub_rate = done / (time.perf_counter() - started)
        store.dispose()
        hub_rows = record_rows(workdir / "journal.db")
        es_rate, es_why, same = None, "", None
        try:
            from bench import peer_es
        except ImportError as exc:
            missing = (exc.name or "eventsourcing").split(".")[0]
            es_why = f"{missing} is not installed ({INSTALL_HINT})"
        else:
            peer_es.store_events(workdir / "es-events.db", envs)
            create_record_table(workdir / "es-view.db")
            es_rate, es_events = peer_es.catch_up(workdir / "es-events.db",
                                                  workdir / "es-view.db")
            assert es_events == len(envs), (es_events, len(envs))
            same = record_rows(workdir / "es-view.db") == hub_rows
        row("catch-up: stored events -> shared record", hub_rate, "`hub rebuild`", es_rate,
            "eventsourcing 9.5.6 Follower", es_why, same=same)

        # 2. live: the consumers take turns, ROUNDS times; each keeps its best round.
        rounds = ROUNDS if n >= 10_000 else 1  # a short run is a smoke test
        console.print(f"measuring the live projections, {rounds} round(s): the hub, "
                      "quixstreams, the aiokafka ceiling ...")
        me = [sys.executable, "-m", "bench.peers"]
        common = [broker.bootstrap, settings.topics.events, str(len(envs)), str(batch)]
        python = quix_python()
        argv: dict[str, list[str] | None] = {
            "hub": [*me, "hub-live", *common, "{db}", secret],
            "quix": None if python is None else [
                str(python), str(Path(__file__).with_name("peer_quix.py")), *common, "{db}",
                secret],
            "ceiling": [*me, "ceiling", *common]}
        why = {"quix": f"quixstreams' environment is missing ({INSTALL_HINT}, or set "
                       f"{QUIX_ENV})"} if python is None else {}
        best: dict[str, float] = {}
        rows_of: dict[str, list[tuple]] = {}
        names = {"hub": "the hub's runner", "quix": "quixstreams", "ceiling": "the aiokafka loop"}
        for turn in range(rounds):
            for who, args in argv.items():
                if args is None or who in why:
                    continue
                db = workdir / f"{who}-{turn}.db"
                create_record_table(db)
                marks, failed = _child([a.replace("{db}", str(db)) for a in args], console,
                                       names[who])
                if failed:
                    why[who] = failed
                    continue
                rate = steady_rate(marks)
                if rate is not None and rate > best.get(who, 0.0):
                    best[who] = rate
                if who != "ceiling":
                    rows_of.setdefault(who, record_rows(db))
        same = rows_of["quix"] == rows_of.get("hub", hub_rows) if "quix" in rows_of else None
        label = "projection runner"
        row("live: topic -> shared record, steady", best.get("hub"), label, best.get("quix"),
            "quixstreams 3.28.1, SQLite sink", why.get("quix", ""), why.get("hub", ""),
            same=same)
        row("live: vs the Kafka-side ceiling", best.get("hub"), label, best.get("ceiling"),
            "aiokafka + orjson, stores nothing", why.get("ceiling", ""), why.get("hub", ""),
            target=0.5)
        if "hub" in rows_of:
            # The runner's rows are the rebuild's: the same fold, live or replayed.
            assert rows_of["hub"] == hub_rows, "the live projection and the rebuild disagree"
    return table


async def _publish(settings: Settings, envs: list[Envelope]) -> None:
    pub = await Publisher(settings).start()
    try:
        await pub.publish(settings.topics.events, envs)
    finally:
        await pub.stop()


def create_record_table(db: Path) -> None:
    """The table (and index) the hub's projection declares, for a peer to keep up to date
    row by row, as the hub's live projection does (its rebuild builds the index after the
    bulk load instead)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    SharedRecordProjection().tables(md := sa.MetaData())
    md.create_all(engine)
    engine.dispose()


def main(argv: list[str]) -> None:
    """The child processes: ``hub-live`` and ``ceiling``."""
    role, bootstrap, topic, count, batch, *rest = argv
    if role == "hub-live":
        db, secret = rest
        use_identity_secret(bytes.fromhex(secret))
        settings = load_settings(kafka_bootstrap=bootstrap, data_dir=Path(db).parent,
                                 batch_max_records=int(batch)).model_copy(update={
                                     "topics": Topics(inbound="peers.inbound", events=topic,
                                                      deadletter="peers.deadletter"),
                                     "group_prefix": f"peers-{time.time_ns()}"})
        marks = run_loop(hub_live(settings, Path(db), int(count)))
    elif role == "ceiling":
        marks = run_loop(ceiling(bootstrap, topic, int(count), int(batch)))
    else:
        raise SystemExit(f"unknown role {role!r}")
    print(json.dumps({"commits": marks}))


if __name__ == "__main__":
    main(sys.argv[1:])
