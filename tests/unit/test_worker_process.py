"""A worker process leaves when its parent dies without shutting the pool down."""

from __future__ import annotations

import os
import subprocess
import sys
import time

PARENT = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from hub.worker_process import start_worker

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_worker)
    print(pool.submit(os.getpid).result(), flush=True)
    os._exit(137)  # as kill -9 or a crash point would: no shutdown of the pool
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_outlives_its_killed_parent_by_a_moment_only(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # stdout to a file, not a pipe: an orphan holding the pipe would hang run() itself.
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        done = subprocess.run([sys.executable, str(script)], stdout=f, timeout=60)
    assert done.returncode == 137
    worker = int(out.read_text().split()[0])
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), f"worker {worker} lived on after its parent died"


SLOW_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from hub.worker_process import start_worker

def slow_start():
    time.sleep(2)  # a worker still importing when its parent dies
    start_worker()

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=slow_start)
    pool.submit(os.getpid)
    time.sleep(0.5)
    print(*pool._processes, flush=True)
    os._exit(137)
"""


def test_a_worker_whose_parent_died_while_it_started_leaves_too(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(SLOW_PARENT)
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        done = subprocess.run([sys.executable, str(script)], stdout=f, timeout=60)
    assert done.returncode == 137
    worker = int(out.read_text().split()[0])
    deadline = time.monotonic() + 15
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), f"worker {worker} lived on after its parent died"
