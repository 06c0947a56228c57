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

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.put_rate import _serve, offer, put_requests, wait_healthy
from hub.config import Settings, Topics
from hub.log.broker import free_port
from hub.log.topics import ensure_topics


@dataclass
class AckRun:
    ack_after: str
    rate: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    journal_lag_ms: list[float] = field(default_factory=list)  # answer -> row visible


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
    """Reads new ``hub_journal`` rows every ``every`` seconds; when each was first seen."""

    def __init__(self, db_path: Path, every: float = 0.003) -> None:
        self.engine = sa.create_engine(f"sqlite:///{db_path}")
        self.every = every
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JournalWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _run(self) -> None:
        last = 0
        query = sa.text("SELECT seq, source, subject FROM hub_journal WHERE seq > :s "
                        "ORDER BY seq")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                try:
                    rows = conn.execute(query, {"s": last}).all()
                    conn.rollback()  # end the read transaction: see the next commits
                except sa.exc.OperationalError:  # the table is not there yet
                    rows = []
                now = time.perf_counter()
                for seq, source, subject in rows:
                    self.seen.setdefault((source.rsplit(":", 1)[-1], subject), now)
                    last = seq
                time.sleep(self.every)


def run_once(settings: Settings, items: list[tuple[str, dict]], workdir: Path, ack_after: str,
             clients: int, rate: float) -> AckRun:
    topics = Topics(inbound=f"ack-{ack_after}.inbound", events=f"ack-{ack_after}.events",
                    deadletter=f"ack-{ack_after}.deadletter", lab=f"ack-{ack_after}.lab",
                    imaging=f"ack-{ack_after}.imaging",
                    recognition=f"ack-{ack_after}.recognition")
    ensure_topics(settings.model_copy(update={"topics": topics}))
    db = workdir / f"ack-{ack_after}.db"
    port = free_port()
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": settings.bootstrap,
           "HUB_DATABASE_URL": f"sqlite:///{db}", "HUB_DATA_DIR": str(workdir),
           "HUB_CONSUMER_GROUPS": "false", "HUB_ACK_AFTER": ack_after,
           **{f"HUB_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()}}
    requests = put_requests(items)
    server = _serve(["-m", "hub.cli", "serve", "--port", str(port)], env)
    try:
        wait_healthy(port, timeout=60)
        offer(port, requests[:clients], clients, rate)  # warm-up, not measured
        with JournalWatch(db) as watch:
            run = offer(port, requests[clients:], clients, rate)
            time.sleep(1.0)  # let the last rows show (broker mode)
    finally:
        server.terminate()
        server.wait(60)
    out = AckRun(ack_after, run.rate, run.latencies_ms, run.statuses)
    for k, (fid, res) in enumerate(items[clients:]):
        answered = run.answered.get(k)
        seen = watch.seen.get((fid, f"{res['resourceType']}/{res['id']}"))
        if answered is not None and seen is not None:
            out.journal_lag_ms.append(1000 * (seen - answered))
    return out


def ack_runs(settings: Settings, items: list[tuple[str, dict]], workdir: Path,
             clients: int = 50, rate: float = 300.0) -> dict[str, AckRun]:
    """The same load with each setting, ``broker`` first."""
    items = distinct(items)
    return {mode: run_once(settings, items, workdir, mode, clients, rate)
            for mode in ("broker", "journal")}
