"""A rebuild swaps tables while readers keep getting answers, on every backend."""

from __future__ import annotations

import threading

import orjson
import sqlalchemy as sa

from hub.engine.rebuild import ensure_built, rebuild
from hub.record.projection import SharedRecordProjection
from hub.record.read import get_resource, search
from hub.store.schema import journal
from tests.support.events import envelope
from tests.support.resources import observation, patient


def fill_journal(store, n: int) -> None:
    envs = [envelope(patient(f"p{i}")) for i in range(n)]
    envs += [envelope(observation(f"o{i}", pid=f"p{i}")) for i in range(n)]
    with store.begin() as conn:
        conn.execute(sa.insert(journal), [
            {"event_id": e.id, "source": e.source, "type": e.type, "subject": e.subject,
             "time": e.time, "key": e.key, "signature": e.signature, "data": e.data,
             "topic": "hie.events.v1", "topic_id": "t", "partition": 0, "offset": i}
            for i, e in enumerate(envs)])


def test_reads_keep_answering_during_rebuilds(store):
    fill_journal(store, 1500)
    projection = SharedRecordProjection()
    ensure_built(store, projection)
    rebuild(store, projection)
    failures: list[str] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                found = get_resource(store, "Observation", "township-1.o7")
                total, page = search(store, "Observation", ["township-1.p7"], None, 10, 0)
                if found is None or total != 1 or page[0][0]["id"] != "township-1.o7":
                    failures.append(f"wrong answer: {found} {total}")
                reads += 1
            except Exception as exc:  # any error is a failure of the swap
                failures.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert rebuild(store, projection) == 3000
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert reads > 10
    found = get_resource(store, "Observation", "township-1.o7")
    assert found.resource["subject"]["reference"] == "Patient/township-1.p7"
    assert orjson.dumps(found.resource)
