"""A rebuild that dies midway, after some of its transactions committed, leaves the live
tables as they were, and the next rebuild starts over and gives the same tables."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import hub.engine.rebuild as rebuild_module
from hub.engine.rebuild import rebuild
from hub.record.projection import SharedRecordProjection
from tests.store.test_rebuild_workers import fill, snapshot


def test_a_rebuild_dying_midway_leaves_the_live_tables_and_can_run_again(store, monkeypatch):
    fill(store)
    projection = SharedRecordProjection()
    assert rebuild(store, projection, batch_size=70) == 1201
    live = snapshot(store)

    # Two pages a transaction: the sixth page fails after two transactions committed.
    monkeypatch.setattr(rebuild_module, "COMMIT_EVENTS", 140)
    real, pages = rebuild_module.write, []

    def dying(conn, tables, changes):
        pages.append(len(changes))
        if len(pages) == 6:
            raise RuntimeError("killed midway")
        real(conn, tables, changes)

    monkeypatch.setattr(rebuild_module, "write", dying)
    with pytest.raises(RuntimeError, match="killed midway"):
        rebuild(store, projection, batch_size=70)
    assert snapshot(store) == live
    with store.connect() as conn:  # the shadow holds what was committed, nobody reads it
        assert conn.execute(sa.text(
            "SELECT COUNT(*) FROM record_resources__s2")).scalar_one() > 0

    monkeypatch.setattr(rebuild_module, "write", real)
    assert rebuild(store, projection, batch_size=70) == 1201
    assert snapshot(store) == live
