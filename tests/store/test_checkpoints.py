"""SQLite checkpoints run on a thread of the process, not in the committing writer."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from hub.store.checkpoints import BACKSTOP_PAGES, Checkpointer
from hub.store.db import open_store


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames already copied into the database)."""
    conn = sqlite3.connect(path)
    try:
        _, logged, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return logged, copied
    finally:
        conn.close()


def _write(store, rows: int) -> None:
    with store.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", [("x" * 900,)] * rows)


def test_a_commit_leaves_the_checkpoint_to_the_thread(tmp_path: Path, monkeypatch) -> None:
    checkpoints = Checkpointer(interval=0.01)
    monkeypatch.setattr("hub.store.db.CHECKPOINTS", checkpoints)
    tmp_path = tmp_path / "data #1"  # a character a file: URI would read otherwise
    tmp_path.mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with store.connect() as conn:
            backstop = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        assert backstop == BACKSTOP_PAGES  # the writer itself checkpoints only past this
        before = checkpoints.checkpoints
        _write(store, 2000)  # ~2 MB: SQLite's default (1,000 pages) would not be reached
        deadline = time.monotonic() + 10
        while checkpoints.checkpoints == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpoints.checkpoints > before
        # The checkpoint was of the store's own file, not of one its path, misread as a URI,
        # would have named (and created): "data " beside it.
        assert [p.name for p in tmp_path.parent.iterdir()] == ["data #1"]
        with store.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 2000
    finally:
        store.dispose()
    # Everything the commit wrote reached the database file.
    logged, copied = _wal_frames(tmp_path / "hub.db")
    assert logged == copied


def test_a_removed_store_file_is_not_created_again(tmp_path: Path) -> None:
    checkpoints = Checkpointer(interval=0.01)
    path = tmp_path / "gone.db"
    sqlite3.connect(path).close()
    key = checkpoints.register(path)
    path.unlink()
    checkpoints.nudge(key)
    deadline = time.monotonic() + 2
    while checkpoints._due and time.monotonic() < deadline:  # the round has started
        time.sleep(0.01)
    time.sleep(0.1)
    assert not path.exists()
    assert checkpoints.checkpoints == 0
    checkpoints.unregister(key)


def test_a_file_nobody_registered_is_left_alone(tmp_path: Path) -> None:
    checkpoints = Checkpointer(interval=0.01)
    key = checkpoints.register(tmp_path / "a.db")
    checkpoints.unregister(key)
    checkpoints.nudge(key)
    assert checkpoints._thread is None  # nothing to do: no thread started
