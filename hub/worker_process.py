"""What every worker process of the hub (validation, rebuild folding) sets up first.

A worker of ``concurrent.futures.ProcessPoolExecutor`` waits for work on a pipe whose
writing end it holds itself, so when its parent dies without shutting the pool down
(``kill -9``, the out-of-memory killer, a crash test) it never sees the end of the pipe
and lives on, an orphan holding memory and the parent's output pipes. Each worker watches
its parent instead, and leaves when the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

from hub.collector import tune_for_batches

WATCH_SECONDS = 1.0


def start_worker() -> None:
    """Call first in a worker's initializer: the batch collector schedule, and the watch."""
    tune_for_batches()  # a spawned worker does not run the CLI that would set anything
    # The process that started this one, as it recorded itself: a parent killed while the
    # worker was still starting (importing) has already handed it to another, which
    # os.getppid() would name instead, and the watch would never fire.
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)  # reparented: the parent is gone

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
