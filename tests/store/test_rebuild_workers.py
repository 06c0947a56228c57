"""A rebuild folded on worker processes gives the tables and positions of one folded inline."""

from __future__ import annotations

import sqlalchemy as sa

import hub.engine.rebuild as rebuild_module
from hub.engine.rebuild import rebuild
from hub.record.projection import SharedRecordProjection
from hub.store.schema import journal, positions
from tests.support.events import envelope
from tests.support.resources import observation, patient


def fill(store) -> None:
    envs = [envelope(patient(f"p{i}")) for i in range(300)]
    # Versions of one observation in every order, spread over many pages: the newest must
    # win whichever page (and process) folds which version.
    for i in range(300):
        for version in ((3, 1, 2) if i % 2 else (1, 2, 3)):
            envs.append(envelope(observation(f"o{i}", pid=f"p{i}", value=float(version),
                                             version=version)))
    envs.append(envelope(observation("o5", pid="p5"), action="delete"))
    with store.begin() as conn:
        conn.execute(sa.insert(journal), [
            {"event_id": e.id, "source": e.source, "type": e.type, "subject": e.subject,
             "time": e.time, "key": e.key, "signature": e.signature, "data": e.data,
             "topic": "hie.events.v1", "topic_id": "t", "partition": i % 3, "offset": i // 3}
            for i, e in enumerate(envs)])


def snapshot(store) -> tuple[list, list]:
    with store.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT resource_type, id, patient_key, order_key, body FROM record_resources "
            "ORDER BY resource_type, id")).all()
        where = conn.execute(sa.select(positions.c.topic, positions.c.partition,
                                       positions.c.offset)
                             .where(positions.c.consumer == "projection:shared_record")
                             .order_by(positions.c.partition)).all()
    return [tuple(r) for r in rows], [tuple(r) for r in where]


def test_workers_fold_the_same_tables_as_one_process(store, monkeypatch):
    fill(store)
    with store.begin() as conn:  # seq values no row holds: pages of workers skip them
        conn.execute(sa.delete(journal).where(journal.c.seq.between(101, 180)))
    projection = SharedRecordProjection()
    assert rebuild(store, projection, batch_size=70) == 1121
    inline = snapshot(store)
    assert len(inline[0]) == 520 and inline[1] == [
        ("hie.events.v1", 0, 400), ("hie.events.v1", 1, 399), ("hie.events.v1", 2, 399)]
    assert dict(((r[0], r[1]), r[4]) for r in inline[0])[
        ("Observation", "township-1.o4")].count('"value":3.0') == 1

    monkeypatch.setattr(rebuild_module, "PARALLEL_FROM", 0)  # workers even for 1,121 rows
    assert rebuild(store, projection, batch_size=70, workers=2) == 1121
    assert snapshot(store) == inline
