"""``hub bench --only rebuild-1m``: the shared-record rebuild of a million-event journal.

The journal is grown in steps (a tenth, three tenths, all of ``--events``) and at each step
the bare loop (``bench.run.bare_rebuild_rate``) and the hub's rebuild run, each in a fresh
process as ``hub rebuild`` does, which reports its time and its peak memory (``VmHWM``): a
rebuild that streams keeps the same peak at every step.

Signing and validating a million events would take the best part of an hour here, so the
journal is written straight into the store: a few thousand events from the simulated
consortium (``bench.workload``), then copies of them with fresh ids (resource, patient and
event ids get a ``-c<copy>`` suffix, in the subject, the key and the resource), inserted
with executemany. The copies are unsigned (the rebuild does not verify signatures;
``hub verify`` would report them).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from hub.engine.rebuild import default_workers
from hub.envelope import Envelope
from hub.store.db import Store, open_store
from hub.store.schema import journal

TEMPLATES = 5000
IDENTITY_SECRET = b"bench-identity-secret-0123456789"  # as bench.workload.envelopes uses
_COLUMNS = ("event_id", "source", "type", "subject", "time", "key", "signature", "data",
            "topic", "topic_id", "partition", "offset")


@dataclass(frozen=True)
class Figure:
    """One measured run, as its process reported it."""

    events: int
    rows: int
    seconds: float
    peak_mb: float
    cpu_seconds: float  # of the process and the fold workers it started: what a busy
    # machine's other work cannot inflate
    workers: int
    worker_peak_mb: float  # the largest fold worker's peak (0 without workers)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _insert_sql(store: Store) -> tuple[str, tuple[str, ...]]:
    """The journal insert with positional parameters, so rows go to the driver as tuples."""
    dialect = store.engine.dialect
    if not dialect.positional:
        dialect = type(dialect)(paramstyle="format")
    compiled = sa.insert(journal).compile(dialect=dialect, column_keys=list(_COLUMNS))
    return str(compiled), tuple(compiled.positiontup or ())


def _copies(templates: list[Envelope], start: int, stop: int) -> Iterator[tuple]:
    """Journal rows ``start`` .. ``stop - 1``: row i is copy i // len(templates) of one
    template, with its own resource, patient and event ids."""
    n = len(templates)
    for i in range(start, stop):
        e = templates[i % n]
        copy = i // n
        if copy == 0:
            yield (e.id, e.source, e.type, e.subject, e.time, e.key, e.signature, e.data,
                   "hie.events.v1", "bench", i % 6, i)
            continue
        tag = f"-c{copy}"
        rtype, rid = e.subject.split("/", 1)
        facility, pid = e.key.split(".", 1)
        data = e.data.replace(f'"id":"{rid}"'.encode(), f'"id":"{rid}{tag}"'.encode(), 1)
        if rtype != "Patient":
            data = data.replace(f'"reference":"Patient/{pid}"'.encode(),
                                f'"reference":"Patient/{pid}{tag}"'.encode())
        yield (f"{e.id}{tag}", e.source, e.type, f"{rtype}/{rid}{tag}", e.time,
               f"{facility}.{pid}{tag}", None, data, "hie.events.v1", "bench", i % 6, i)


def grow_journal(store: Store, templates: list[Envelope], start: int, stop: int,
                 chunk: int = 20000) -> None:
    """Append journal rows ``start`` .. ``stop - 1`` with executemany, ``chunk`` a commit."""
    sql, names = _insert_sql(store)
    order = [_COLUMNS.index(n) for n in names]
    rows = _copies(templates, start, stop)
    while True:
        batch = [tuple(r[k] for k in order) for _, r in zip(range(chunk), rows, strict=False)]
        if not batch:
            return
        with store.begin() as conn:
            conn.exec_driver_sql(sql, batch)


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(url: str, which: str) -> Figure:
    """Run ``which`` (``hub`` or ``bare``) against the journal at ``url`` in a fresh
    process, as ``hub rebuild`` would run."""
    out = subprocess.run([sys.executable, "-m", "bench.rebuild_big", which, url],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{which} rebuild failed: {out.stderr.strip()[-2000:]}")
    return Figure(**json.loads(out.stdout.strip().splitlines()[-1]))


def _child(which: str, url: str) -> None:
    from bench.rebuild import bare_rebuild_rate, hub_rebuild_rate
    from hub.identity import use_identity_secret

    use_identity_secret(IDENTITY_SECRET)
    store = open_store(url, create=False)
    with store.connect() as conn:
        events = conn.execute(sa.select(sa.func.count()).select_from(journal)).scalar_one()
    workers = default_workers() if which == "hub" else 0
    cpu = _cpu()
    if which == "hub":  # as `hub rebuild` runs by default: a fold worker per CPU
        rate, rows = hub_rebuild_rate(store, workers)
    else:
        rate, rows = bare_rebuild_rate(store)
    cpu = _cpu() - cpu
    store.dispose()
    print(json.dumps({"events": events, "rows": rows, "seconds": events / rate,
                      "peak_mb": peak_mb(), "cpu_seconds": cpu, "workers": workers,
                      "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                      / 1024}))


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema at ``base_url`` for the run (dropped after): the bench must not touch
    whatever else lives in that database."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def steps(events: int) -> list[int]:
    """The journal sizes measured: a tenth, three tenths and all of ``events``."""
    return sorted({max(1, events // 10), max(1, events * 3 // 10), events})


def run_steps(url: str, templates: list[Envelope], sizes: list[int],
              report) -> list[tuple[Figure, Figure]]:
    """Grow the journal at ``url`` through ``sizes``; at each, the bare loop and the hub's
    rebuild, each in a fresh process: ``report(size, generated_s, bare, hub)``."""
    store = open_store(url)
    out = []
    have = 0
    try:
        for size in sizes:
            started = time.perf_counter()
            grow_journal(store, templates, have, size)
            generated = time.perf_counter() - started
            have = size
            bare = measure(url, "bare")
            hub = measure(url, "hub")
            report(size, generated, bare, hub)
            out.append((bare, hub))
    finally:
        store.dispose()
    return out


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
