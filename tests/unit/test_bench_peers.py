"""``hub bench --peers`` compares like with like: every peer folds the events into the rows
the hub's shared record holds, and the steady rate leaves the start-up out."""

from __future__ import annotations

import dataclasses

import pytest

from bench.peer_fold import record_row
from bench.peers import create_record_table, record_rows, steady_rate
from bench.workload import envelopes, fill_journal, population
from hub.engine.projection import Event
from hub.engine.rebuild import rebuild
from hub.envelope import HUB_SOURCE, Envelope
from hub.record.projection import SharedRecordProjection
from hub.store.db import open_store
from tests.support.events import envelope
from tests.support.resources import observation


def _events() -> list[Envelope]:
    """The bench's own workload (Patients with national IDs among them), an older version
    arriving after a newer one, a deletion, and an event the hub authored."""
    envs = envelopes(population(200))
    newer, older = (envelope(observation("o-late", version=v)) for v in (2, 1))
    gone = envelope(observation("o-gone"))
    deleted = envelope(observation("o-gone"), action="delete")
    hubs = dataclasses.replace(envs[0], id="hub-own-1", source=HUB_SOURCE)
    return [*envs, newer, older, gone, deleted, hubs]


def test_the_peers_fold_gives_each_event_the_row_the_hubs_projection_gives_it():
    envs = _events()
    hashed = 0
    for e in envs:
        ours = SharedRecordProjection().apply([Event.from_envelope(e, "t", 0, 0)])
        peer = record_row(e.id, e.source, e.type, e.subject, e.time, e.key, e.data)
        rows = [dict(zip(c.columns, r, strict=True)) for c in ours for r in c.rows]
        if not rows:
            assert peer is None, e
            continue
        (row,) = rows
        assert peer == tuple(row[c] for c in (
            "resource_type", "id", "patient_key", "order_key", "body")), e
        hashed += peer[4] is not None and b"urn:oid:2.16.156.10011.1." in e.data \
            and "urn:hie:keyed-hash:national-id" in peer[4]
    assert hashed > 0  # the national-ID hashing was exercised, not skipped


def test_the_eventsourcing_follower_leaves_the_rows_the_hubs_rebuild_leaves(tmp_path):
    pytest.importorskip("eventsourcing")
    from bench import peer_es

    envs = _events()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    fill_journal(store, envs)
    rebuild(store, SharedRecordProjection())
    store.dispose()
    peer_es.store_events(tmp_path / "events.db", envs)
    create_record_table(tmp_path / "view.db")
    _, caught_up = peer_es.catch_up(tmp_path / "events.db", tmp_path / "view.db")

    assert caught_up == len(envs)
    hub_rows = record_rows(tmp_path / "hub.db")
    assert len(hub_rows) > 150
    assert record_rows(tmp_path / "view.db") == hub_rows


def test_the_steady_rate_starts_at_the_first_commit():
    # 100 events in the first commit (start-up), then 300 in the 2 s after it.
    assert steady_rate([(10.0, 100), (11.0, 100), (12.0, 200)]) == 150.0
    assert steady_rate([(10.0, 500)]) is None  # one commit: nothing to time
    assert steady_rate(None) is None
