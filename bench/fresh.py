"""The ingest stage and bare validation, each measured in a fresh process of its own.

As ``hub ingest`` runs the stage: a process that holds nothing but the stage. Measured in the
bench's own process, the stage (and the bare loop beside it) worked with the bench's heap
around it: every resource and envelope of the workload, which each full collection walks
again. Both sides of the ratio run in fresh processes here, so neither carries that weight.

``python -m bench.fresh bare ITEMS_FILE`` and ``python -m bench.fresh stage COUNT BOOTSTRAP
PREFIX WORKERS DATA_DIR`` print one JSON line: ``{"rate": ..., "cpu_rate": ...}`` (per
wall-clock second, per CPU second of the process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson


def write_items(path: Path, items: list[tuple[str, dict]]) -> Path:
    path.write_bytes(orjson.dumps(items))
    return path


def _run(args: list[str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-m", "bench.fresh", *args], capture_output=True,
                         text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"bench.fresh {args[0]} failed: {out.stderr.strip()[-2000:]}")
    found = json.loads(lines[-1])
    return found["rate"], found["cpu_rate"]


def bare_rate(items_file: Path) -> tuple[float, float]:
    """Bare fhir.resources validation of the items, in a fresh process."""
    return _run(["bare", str(items_file)])


def stage_rate(count: int, bootstrap: str, prefix: str, workers: int, data_dir: Path
               ) -> tuple[float, float]:
    """The ingest stage, in a fresh process, over the ``count`` records the caller published
    to ``PREFIX.inbound``; its CPU per second excludes the worker processes'."""
    return _run(["stage", str(count), bootstrap, prefix, str(workers), str(data_dir)])


def _bare(items: list[tuple[str, dict]]) -> dict[str, float]:
    from fhir.resources.R4B import get_fhir_model_class

    started, cpu = time.perf_counter(), time.process_time()
    for _, res in items:
        get_fhir_model_class(res["resourceType"]).model_validate(res)
    return {"rate": len(items) / (time.perf_counter() - started),
            "cpu_rate": len(items) / (time.process_time() - cpu)}


def _stage(count: int, bootstrap: str, prefix: str, workers: int, data_dir: Path
           ) -> dict[str, float]:
    from hub.aio import run_loop
    from hub.collector import settle_for_batches
    from hub.config import Topics, load_settings
    from hub.ingest.checks import EdgeChecks
    from hub.ingest.stage import IngestStage
    from hub.log.producer import Publisher
    from hub.registry.consortium_file import load_directory
    from hub.store.db import open_store

    settings = load_settings(kafka_bootstrap=bootstrap, data_dir=data_dir).model_copy(update={
        "validation_workers": workers,
        "topics": Topics(inbound=f"{prefix}.inbound", events=f"{prefix}.events",
                         deadletter=f"{prefix}.deadletter")})

    async def main() -> dict[str, float]:
        directory = load_directory(None)
        checks = EdgeChecks(settings, directory)
        pub = await Publisher(settings).start()
        store = open_store(f"sqlite:///{data_dir / f'{prefix}.db'}")
        try:
            if workers:  # the worker processes start before the clock does
                await checks.warm_up()
            stage = IngestStage(settings, directory, pub, store, checks)
            settle_for_batches()  # as `hub ingest` does
            cpu = time.process_time()
            stats = await stage.run(until_caught_up=True)
            cpu = time.process_time() - cpu
        finally:
            await pub.stop()
            checks.close()
            store.dispose()
        if stats.accepted != count:
            raise SystemExit(f"the stage let in {stats.accepted} of {count}: {stats}")
        return {"rate": stats.accepted / (stats.last_batch_at - stats.first_batch_at),
                "cpu_rate": stats.accepted / cpu}

    return run_loop(main())


def main(argv: list[str]) -> None:
    role, first, *rest = argv
    if role == "bare":
        found = _bare(orjson.loads(Path(first).read_bytes()))
    elif role == "stage":
        bootstrap, prefix, workers, data_dir = rest
        found = _stage(int(first), bootstrap, prefix, int(workers), Path(data_dir))
    else:
        raise SystemExit(f"unknown role {role!r}")
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
