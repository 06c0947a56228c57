"""Export jobs in the background of the hub process: one at a time, in a worker thread,
so an export never holds the event loop and two exports do not compete for the store."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hub.access import audit_store
from hub.access.rules import AuditRecord, audit_id
from hub.clock import now_rfc3339
from hub.export import jobs
from hub.export.writer import Cancelled, ExportSpec, write_export
from hub.store.db import Store

log = logging.getLogger(__name__)


class ExportRunner:
    """Runs export jobs; each job's state is in its ``job.json`` (see ``jobs``).

    A job whose state says in progress but that this runner does not hold was cut short
    by a stop of the hub: ``running`` tells the status endpoint so.
    """

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._cancelled: set[str] = set()
        self._closed = False

    def submit(self, job: jobs.Job, spec: ExportSpec) -> None:
        jobs.save(self.root, job)
        with self._lock:
            self._live.add(job.id)
        self._pool.submit(self._run, job, spec)

    def running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._live

    def cancel(self, job_id: str) -> None:
        """Stop the job between partitions (if it runs) and remove its files."""
        with self._lock:
            live = job_id in self._live
            if live:
                self._cancelled.add(job_id)
        if not live:
            jobs.remove(self.root, job_id)

    def close(self) -> None:
        """Cancel what runs or waits, and wait for the worker to let go of the store."""
        with self._lock:
            self._closed = True
            self._cancelled |= self._live
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: jobs.Job, spec: ExportSpec) -> None:
        what = f"{job.request} (export {job.id})"

        def audited(keys: Collection[str]) -> None:
            recorded = now_rfc3339()
            audit_store.record(self.store, [
                AuditRecord(audit_id(), recorded, job.owner_kind, job.owner_id, "operation",
                            what, k, "0") for k in sorted(keys)])

        saved = [time.monotonic()]

        def progress(rtype: str, n: int) -> None:
            job.progress = f"{n} resources written ({rtype})"
            if time.monotonic() - saved[0] > 1.0:  # the poller reads it from disk
                jobs.save(self.root, job)
                saved[0] = time.monotonic()

        def cancelled() -> bool:
            with self._lock:
                return job.id in self._cancelled

        try:
            if cancelled():
                raise Cancelled
            outputs = write_export(self.store, spec, self.root / job.id, progress, audited,
                                   cancelled)
            job.output = [{"type": o.type, "file": o.file, "count": o.count}
                          for o in outputs]
            job.status, job.progress = jobs.COMPLETE, "complete"
            job.finished = now_rfc3339()
            jobs.save(self.root, job)
        except Cancelled:
            if self._closed:
                self._fail(job, "the hub stopped during the export; start it again")
        except Exception as exc:  # reported to the poller, not lost in a thread
            log.exception("export %s failed", job.id)
            self._fail(job, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._live.discard(job.id)
                dropped = job.id in self._cancelled and not self._closed
                self._cancelled.discard(job.id)
            if dropped:  # cancelled after its last look at the flag: it finished anyway
                jobs.remove(self.root, job.id)

    def _fail(self, job: jobs.Job, why: str) -> None:
        job.status, job.error = jobs.FAILED, why
        job.finished = now_rfc3339()
        jobs.save(self.root, job)
