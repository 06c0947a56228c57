"""Which file a SQLite store URL names: the directory made for it and the file checkpointed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.store.db import open_store, sqlite_file


@pytest.mark.parametrize("url, path", [
    ("sqlite:///data/hub.db", Path("data/hub.db")),
    ("sqlite:////abs/hub.db", Path("/abs/hub.db")),
    ("sqlite:///data/hub.db?timeout=5", Path("data/hub.db")),
    ("sqlite:///file:data/hub.db?uri=true", Path("data/hub.db")),
    ("sqlite:///file:///abs/x%20y.db?mode=rwc&uri=true", Path("/abs/x y.db")),
    ("sqlite:///file://localhost/abs/hub.db?uri=true", Path("/abs/hub.db")),
    # Without uri=true SQLite opens the name as it stands, "file:" and all.
    ("sqlite:///file:data/hub.db", Path("file:data/hub.db")),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("sqlite:///file::memory:?uri=true", None),
    ("sqlite:///file:shared.db?mode=memory&uri=true", None),
    ("postgresql+psycopg://postgres@127.0.0.1:5432/test", None),
    ("not a url", None),
])
def test_the_file_a_url_names(url, path):
    assert sqlite_file(url) == path


def test_a_store_at_a_file_uri_is_made_in_its_folder_and_checkpointed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///file:nested/dir/hub.db?uri=true")
    try:
        assert store._wal is not None  # its checkpoints run on the thread
        with store.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (k INTEGER)")
    finally:
        store.dispose()
    assert (tmp_path / "nested" / "dir" / "hub.db").is_file()
    assert not (tmp_path / "file:nested").exists()
