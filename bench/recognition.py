"""The recognition figure: the recognition check at 200 requests/s with 100,000 patients and
5 million results loaded, beside the same-run latency of a bare indexed lookup of the same
rows (what any implementation must at least do)."""

from __future__ import annotations

import random
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from hub.engine.rebuild import ensure_built
from hub.lab.projection import RESULTS, LabProjection
from hub.lab.units import ANALYTES
from hub.mpi.projection import LINKS, MpiProjection
from hub.recognition.catalogue import load_catalogue
from hub.recognition.service import run_check
from hub.registry.consortium_file import load_directory
from hub.store.db import open_store

ITEMS = ("GLU", "HBA1C", "CREA", "ALT", "TC", "K")


def load(store, patients: int, results: int, progress=None) -> list[str]:
    """Fill the lab and patient-index tables; returns the patient keys."""
    directory = load_directory(None)
    facilities = [f.id for f in directory]
    rng = random.Random(7)
    codes = [(a.key, a.loinc[0], a.unit) for a in ANALYTES]
    keys = [f"{rng.choice(facilities)}.p{i}" for i in range(patients)]
    lab = LabProjection().tables(sa.MetaData())[RESULTS]
    links = MpiProjection().tables(sa.MetaData())[LINKS]
    with store.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS ix_{lab.name}_patient"))
    per = results // patients
    cols = "id, patient_key, analyte, loinc, display, status, visible, effective, value_num, " \
        "unit, performer, order_key"
    sql = f"INSERT INTO {lab.name} ({cols}) VALUES ({', '.join('?' * 12)})"
    batch = []
    n = 0
    for i, key in enumerate(keys):
        for j in range(per):
            analyte, loinc, unit = codes[j % len(codes)]
            day = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"
            status = "final" if rng.random() > 0.03 else "amended"
            batch.append((f"{key}.r{j}", key, analyte, loinc, analyte, status, 1,
                          f"{day}T01:00:00.000000Z", 5.0, unit, rng.choice(facilities),
                          f"{day}|{j}"))
        if len(batch) >= 100_000 or i == len(keys) - 1:
            with store.begin() as conn:
                conn.exec_driver_sql(sql, batch)
            n += len(batch)
            if progress:
                progress(len(batch))
            batch = []
    with store.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_{lab.name}_patient ON {lab.name} "
                             "(patient_key, analyte, effective)"))
        # A tenth of the patients are known at two facilities (the index linked them).
        conn.execute(sa.insert(links), [
            {"record_key": k, "person_id": f"p-{i // 2}", "seq": 1}
            for i, k in enumerate(keys[: patients // 10])])
    return keys


def paced(fn, args: list, rate: float) -> list[float]:
    out = []
    start = time.perf_counter()
    for i, a in enumerate(args):
        due = start + i / rate
        if (pause := due - time.perf_counter()) > 0:
            time.sleep(pause)
        t0 = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(workdir: Path, patients: int = 100_000, results: int = 5_000_000,
            requests: int = 2000, rate: float = 200, progress=None
            ) -> tuple[list[float], list[float], int]:
    store = open_store(f"sqlite:///{workdir / 'recognition.db'}")
    try:
        for p in (LabProjection(), MpiProjection()):
            ensure_built(store, p)
        keys = load(store, patients, results, progress)
        catalogue = load_catalogue()
        registry = {f.id: f.record for f in load_directory(None)}
        loinc = [c for i in ITEMS for c in catalogue.items[i].loinc]
        rng = random.Random(11)
        sample = [rng.choice(keys) for _ in range(requests)]
        lab = LabProjection().tables(sa.MetaData())[RESULTS]
        bare_sql = sa.select(lab.c.id, lab.c.performer, lab.c.effective, lab.c.status,
                             lab.c.loinc).where(lab.c.patient_key.in_(sa.bindparam(
                                 "keys", expanding=True)), lab.c.loinc.in_(loinc))
        with store.connect() as conn:
            def bare(key: str) -> None:
                conn.execute(bare_sql, {"keys": [key]}).all()

            bare_ms = paced(bare, sample, rate)
        found = 0

        def hub(key: str) -> None:
            nonlocal found
            _, verdicts = run_check(store, registry, catalogue, key, ITEMS, date(2026, 11, 23))
            found += sum(1 for v in verdicts if v.recognisable)

        hub_ms = paced(hub, sample, rate)
        return hub_ms, bare_ms, found
    finally:
        store.dispose()
