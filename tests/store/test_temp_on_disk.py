"""The connection a rebuild drops its retired tables on goes back to the pool as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.engine.rebuild import temp_on_disk
from hub.store.db import open_store


@pytest.mark.parametrize("setting", [0, 1, 2], ids=["off", "on", "fast"])
def test_the_drop_gives_back_the_secure_delete_it_found(tmp_path: Path, setting: int) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        names = {0: "OFF", 1: "ON", 2: "FAST"}
        with store.connect() as conn:
            raw = conn.connection.driver_connection
            raw.execute(f"PRAGMA secure_delete={names[setting]}")
            pooled = id(raw)
        with temp_on_disk(store, drop=True) as conn:
            raw = conn.connection.driver_connection
            assert id(raw) == pooled  # the one connection of the pool
            assert raw.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST meanwhile
        with store.connect() as conn:
            raw = conn.connection.driver_connection
            assert id(raw) == pooled
            assert raw.execute("PRAGMA secure_delete").fetchone()[0] == setting
    finally:
        store.dispose()
