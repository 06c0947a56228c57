"""The export figure: a million resources of the shared record written to ndjson by the
hub's bulk export (its runner and writer: streamed from SQL, presented as the read API
shows them, every patient audited), identified and de-identified, beside a bare SQL SELECT
of the same rows streamed to one ndjson file (what any export must at least do). Each runs
in a fresh process, which reports its rate and its peak resident memory; the hub's export
of a twentieth of the rows shows whether memory grows with the size of the export."""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import sqlalchemy as sa

from hub.engine.rebuild import ensure_built
from hub.export import jobs
from hub.export.runner import ExportRunner
from hub.export.writer import ExportSpec
from hub.identity import use_identity_secret
from hub.record.projection import TABLE, SharedRecordProjection
from hub.registry.consortium_file import load_directory
from hub.store.db import open_store

RESOURCES = 1_000_000
PER_PATIENT = 20  # a Patient and 19 results
SECRET = b"bench-identity-secret-0123456789"


def _patient(fid: str, pid: str) -> bytes:
    return orjson.dumps({
        "resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
        "identifier": [{"system": "urn:hie:keyed-hash:national-id", "value": "ab" * 32},
                       {"system": f"urn:hie:facility:{fid}:mrn", "value": f"M{pid}"}],
        "name": [{"text": "王秀英", "family": "王", "given": ["秀英"]}],
        "telecom": [{"system": "phone", "value": "13800000000"}],
        "gender": "female", "birthDate": "1958-03-02"})


def _observation(pid: str, oid: str, day: int) -> bytes:
    return orjson.dumps({
        "resourceType": "Observation", "id": oid, "status": "final",
        "meta": {"versionId": "1", "lastUpdated": f"2026-{day % 12 + 1:02d}-{day % 28 + 1:02d}"
                 "T08:00:00+08:00"},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0",
                             "display": "Glucose"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"2026-{day % 12 + 1:02d}-{day % 28 + 1:02d}T07:30:00+08:00",
        "valueQuantity": {"value": 5.0 + day % 30 / 10, "unit": "mmol/L",
                          "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "note": [{"text": "空腹"}]})


def load(url: str, total: int, progress: Callable[[int], None] | None = None) -> None:
    """``total`` resources in the shared record: Patients with their results."""
    store = open_store(url)
    try:
        ensure_built(store, SharedRecordProjection())
        table = SharedRecordProjection().tables(sa.MetaData())[TABLE]
        facilities = [f.id for f in load_directory(None)]
        batch: list[dict] = []
        for n in range(total):
            p, i = divmod(n, PER_PATIENT)
            fid = facilities[p % len(facilities)]
            pid = f"p{p}"
            key = f"{fid}.{pid}"
            if i == 0:
                row = ("Patient", f"{fid}.{pid}", _patient(fid, pid))
            else:
                row = ("Observation", f"{fid}.o{p}-{i}", _observation(pid, f"o{p}-{i}", n))
            batch.append({"resource_type": row[0], "id": row[1], "patient_key": key,
                          "order_key": f"000000000001|2026-11-01T00:00:00.000000Z|1|e{n}",
                          "body": row[2].decode()})
            if len(batch) == 20_000:
                with store.begin() as conn:
                    conn.execute(sa.insert(table), batch)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            with store.begin() as conn:
                conn.execute(sa.insert(table), batch)
            if progress:
                progress(len(batch))
    finally:
        store.dispose()


def _bare(url: str, out: Path) -> int:
    store = open_store(url)
    table = SharedRecordProjection().tables(sa.MetaData())[TABLE]
    n = 0
    with store.connect() as conn, out.open("wb") as fh:
        result = conn.execution_options(stream_results=True, yield_per=1000).execute(
            sa.select(table.c.body).where(table.c.body.is_not(None))
            .order_by(table.c.resource_type, table.c.id))
        for rows in result.partitions(1000):
            fh.write(b"".join(r.body.encode() + b"\n" for r in rows))
            n += len(rows)
    store.dispose()
    return n


def _hub(url: str, out: Path, types: tuple[str, ...], deidentify: bool) -> int:
    use_identity_secret(SECRET)
    store = open_store(url)
    runner = ExportRunner(store, out)
    job = jobs.Job(jobs.new_job_id(), "app", "bench", "bench", "", deidentify)
    runner.submit(job, ExportSpec(types, False, None, frozenset(), None,
                                  SECRET if deidentify else None))
    while runner.running(job.id):
        time.sleep(0.05)
    runner.close()
    store.dispose()
    done = jobs.load(out, job.id)
    assert done is not None and done.status == jobs.COMPLETE, done
    return sum(o["count"] for o in done.output)


def _child(kind: str, url: str, out: str, types: tuple[str, ...], send) -> None:
    start = time.perf_counter()
    n = _bare(url, Path(out)) if kind == "bare" else _hub(url, Path(out), types,
                                                          kind == "deidentified")
    seconds = time.perf_counter() - start
    send.send((n, seconds, peak_rss_mb()))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not ``ru_maxrss``: Linux carries that over
    ``exec`` from the parent, so a spawned child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_child(kind: str, url: str, out: Path, types: tuple[str, ...] = ("Patient",
                                                                            "Observation")
                 ) -> tuple[int, float, float]:
    """(resources, resources/s, peak RSS in MB) of one export in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(kind, url, str(out), types, send))
    proc.start()
    n, seconds, peak = recv.recv()
    proc.join()
    return n, n / seconds, peak


def measure(workdir: Path, total: int = RESOURCES, progress=None) -> dict[str, tuple]:
    url = f"sqlite:///{workdir / 'export.db'}"
    load(url, total, progress)
    return {
        "bare": run_in_child("bare", url, workdir / "bare.ndjson"),
        "hub": run_in_child("identified", url, workdir / "exports"),
        "deidentified": run_in_child("deidentified", url, workdir / "exports"),
        "hub-small": run_in_child("identified", url, workdir / "exports", ("Patient",)),
    }
