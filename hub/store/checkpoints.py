"""SQLite checkpoints on a thread of the process, off the committing writer's path.

In WAL mode the commit that takes the log past ``wal_autocheckpoint`` pages copies the log
into the database file and waits for two fsyncs before it returns. For a projection runner
writing 2,000 rows a batch that was about half of each commit's time, and the runner cannot
read its next batch meanwhile. Here a commit only nudges one thread of the process, which
runs a PASSIVE checkpoint (it never blocks readers or writers) at most every ``INTERVAL``
seconds: the copying and the fsyncs overlap the writers' next work. The writers' own
autocheckpoint stays, at ``BACKSTOP_PAGES``, for when this thread falls behind.

A checkpoint changes nothing a reader or a crash can see: the committed transactions are in
the WAL already, and SQLite replays it on opening after a crash.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

INTERVAL = 0.25  # seconds between two checkpoints of one file, at most
BACKSTOP_PAGES = 16384  # of 4 KiB: a writer checkpoints itself past 64 MiB of WAL


class Checkpointer:
    """Checkpoints the SQLite files registered with it after commits nudge it."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._cond = threading.Condition()
        self._users: dict[str, int] = {}
        self._due: set[str] = set()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # done so far (tests and diagnostics)

    def register(self, path: Path) -> str:
        """Start checkpointing ``path`` (a store opened it); the key for nudge/unregister."""
        key = str(path)
        with self._cond:
            self._users[key] = self._users.get(key, 0) + 1
        return key

    def unregister(self, key: str) -> None:
        with self._cond:
            left = self._users.get(key, 0) - 1
            if left > 0:
                self._users[key] = left
            else:
                self._users.pop(key, None)
                self._due.discard(key)
                self._cond.notify()  # the thread closes its connection to the file

    def nudge(self, key: str) -> None:
        """A transaction committed on ``key``: checkpoint it soon."""
        with self._cond:
            if key not in self._users:
                return
            self._due.add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        conns: dict[str, sqlite3.Connection] = {}
        while True:
            with self._cond:
                while not self._due:
                    for key in [k for k in conns if k not in self._users]:
                        conns.pop(key).close()
                    self._cond.wait()
                due, self._due = self._due, set()
            for key in due:
                self._checkpoint(conns, key)
            # Commits that land meanwhile gather into the next round: a busy writer's WAL
            # is copied in a few large steps, not after every commit.
            time.sleep(self.interval)

    def _checkpoint(self, conns: dict[str, sqlite3.Connection], key: str) -> None:
        try:
            conn = conns.get(key)
            if conn is None:
                # mode=rw: a file removed meanwhile is not created again, empty. Quoted:
                # a folder may be named with "?", "#" or "%", which a URI reads otherwise.
                conn = conns[key] = sqlite3.connect(f"file:{quote(key)}?mode=rw", uri=True,
                                                    timeout=0, isolation_level=None,
                                                    check_same_thread=False)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:
            # Busy or gone: the next commit nudges again, and the writers' backstop remains.
            log.debug("checkpoint of %s skipped: %s", key, exc)
            found = conns.pop(key, None)
            if found is not None:
                found.close()


CHECKPOINTS = Checkpointer()
