"""What durable acknowledgement costs: PUT latency with ``ack_after=journal`` vs ``broker``.

The whole hub runs in one process (gateway, ingest, journal and projections share its event
loop), once per setting, on the same broker and the same offered load (single-resource PUTs
from many clients), each with fresh topics and a fresh SQLite store. The bench process
watches the journal table meanwhile (a read every few milliseconds), so the journal lag is
the time from the 2xx answer to the moment the event's row is visible in ``hub_journal``:
with ``broker`` it is how long an acknowledged event stayed only in the broker's memory;
with ``journal`` it is never positive (the answer waits for the row).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.put_rate import _serve, offer, put_requests, wait_healthy
from hub.config import Settings, Topics
from hub.log.broker import free_port
from hub.log.topics import ensure_topics
from hub.projections import all_projections


@dataclass
class AckRun:
    ack_after: str
    rate: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    journal_lag_ms: list[float] = field(default_factory=list)  # answer -> row visible
    layout: str = "one"


def distinct(items: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """One PUT per resource, so a journal row names the request it came from."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for fid, res in items:
        key = (fid, res["resourceType"], res["id"])
        if key not in seen:
            seen.add(key)
            out.append((fid, res))
    return out


class JournalWatch:
    """Reads new ``hub_journal`` rows every ``every`` seconds; when each was first seen.

    In a process of its own: in the load generator's process (50 client threads) the watch
    thread waited its turn for the interpreter and reported rows late. ``perf_counter`` is
    the system's monotonic clock, so its readings compare across processes."""

    def __init__(self, db_path: Path, every: float = 0.003) -> None:
        self.db_path = db_path
        self.every = every
        self.seen: dict[tuple[str, str], float] = {}
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._out = ctx.Queue()
        self._proc = ctx.Process(target=_watch, args=(str(db_path), every, self._stop,
                                                      self._ready, self._out), daemon=True)

    def __enter__(self) -> JournalWatch:
        self._proc.start()
        # Rows committed while the watcher still imported would count as seen late.
        if not self._ready.wait(60):
            raise RuntimeError("the journal watcher did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.seen = self._out.get(timeout=60)
        self._proc.join(10)


def _watch(db_path: str, every: float, stop, ready, out) -> None:
    engine = sa.create_engine(f"sqlite:///{db_path}")
    seen: dict[tuple[str, str], float] = {}
    last = 0
    query = sa.text("SELECT seq, source, subject FROM hub_journal WHERE seq > :s ORDER BY seq")
    with engine.connect() as conn:
        ready.set()
        while not stop.is_set():
            try:
                rows = conn.execute(query, {"s": last}).all()
                conn.rollback()  # end the read transaction: see the next commits
            except sa.exc.OperationalError:  # the table is not there yet
                rows = []
            now = time.perf_counter()
            for seq, source, subject in rows:
                seen.setdefault((source.rsplit(":", 1)[-1], subject), now)
                last = seq
            time.sleep(every)
    engine.dispose()
    out.put(seen)


def run_once(settings: Settings, items: list[tuple[str, dict]], workdir: Path, ack_after: str,
             clients: int, rate: float, layout: str = "one") -> AckRun:
    """``layout``: ``one`` is ``hub serve`` with everything in its process; ``split`` is the
    documented deployment in three processes (``hub serve --no-projections``, ``hub project
    journal``, ``hub project`` with the rest), each with its own interpreter."""
    name = f"ack-{ack_after}-{layout}"
    topics = Topics(inbound=f"{name}.inbound", events=f"{name}.events",
                    deadletter=f"{name}.deadletter", lab=f"{name}.lab",
                    imaging=f"{name}.imaging", recognition=f"{name}.recognition",
                    referral=f"{name}.referral", alerts=f"{name}.alerts",
                    receipts=f"{name}.receipts")
    ensure_topics(settings.model_copy(update={"topics": topics}))
    db = workdir / f"{name}.db"
    port = free_port()
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": settings.bootstrap,
           "HUB_DATABASE_URL": f"sqlite:///{db}", "HUB_DATA_DIR": str(workdir),
           "HUB_CONSUMER_GROUPS": "false", "HUB_ACK_AFTER": ack_after,
           **{f"HUB_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()}}
    requests = put_requests(items)
    if layout == "one":
        server = _serve(["-m", "hub.cli", "serve", "--port", str(port)], env)
        helpers = []
    else:
        server = _serve(["-m", "hub.cli", "serve", "--port", str(port), "--no-projections"],
                        env)
        wait_healthy(port, timeout=60)  # the store's tables exist before the others open it
        rest = [n for n in all_projections() if n != "journal"]
        helpers = [_serve(["-m", "hub.cli", "project", "journal"], env),
                   _serve(["-m", "hub.cli", "project", *rest], env)]
    try:
        wait_healthy(port, timeout=60)
        offer(port, requests[:clients], clients, rate)  # warm-up, not measured
        with JournalWatch(db) as watch:
            run = offer(port, requests[clients:], clients, rate)
            time.sleep(1.0)  # let the last rows show (broker mode)
    finally:
        for proc in (server, *helpers):
            proc.terminate()
        for proc in (server, *helpers):
            proc.wait(60)
    out = AckRun(ack_after, run.rate, run.latencies_ms, run.statuses, layout=layout)
    for k, (fid, res) in enumerate(items[clients:]):
        answered = run.answered.get(k)
        seen = watch.seen.get((fid, f"{res['resourceType']}/{res['id']}"))
        if answered is not None and seen is not None:
            out.journal_lag_ms.append(1000 * (seen - answered))
    return out


def ack_runs(settings: Settings, items: list[tuple[str, dict]], workdir: Path,
             clients: int = 50, rate: float = 300.0,
             layouts: tuple[str, ...] = ("one", "split")) -> dict[tuple[str, str], AckRun]:
    """The same load with each setting (``broker`` first) in each process layout."""
    items = distinct(items)
    return {(mode, layout): run_once(settings, items, workdir, mode, clients, rate, layout)
            for layout in layouts for mode in ("broker", "journal")}
