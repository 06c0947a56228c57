"""The shared-record rebuild and the bare loop it is measured against (``hub bench --only
rebuild`` and ``rebuild-1m``). Kept apart from ``bench.run`` so that a process measuring
only this imports no more than ``hub rebuild`` does: its peak memory is reported."""

from __future__ import annotations

import time

import orjson
import sqlalchemy as sa

from hub.engine.rebuild import rebuild, temp_on_disk
from hub.record.projection import SharedRecordProjection
from hub.record.rules import order_key
from hub.store.schema import journal


def settle(store) -> None:
    """Write the SQLite WAL back into the database before a measurement: otherwise the first
    commits of one measurement pay for the checkpoint of the pages the one before wrote."""
    if store.dialect == "sqlite":
        with store.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def bare_rebuild_rate(store) -> tuple[float, int]:
    """The best case: parse, key, upsert the newest version with executemany."""
    with temp_on_disk(store) as bulk, store.begin(on=bulk) as conn:  # as the rebuild drops
        conn.execute(sa.text("DROP TABLE IF EXISTS bare_latest"))
    with store.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bare_latest (rtype TEXT, id TEXT, ord TEXT, "
                             "body TEXT, PRIMARY KEY (rtype, id))"))
    settle(store)
    upsert = sa.text("INSERT INTO bare_latest VALUES (:rtype, :id, :ord, :body) "
                     "ON CONFLICT (rtype, id) DO UPDATE SET ord = excluded.ord, "
                     "body = excluded.body WHERE excluded.ord > bare_latest.ord")
    started = time.perf_counter()
    n = 0
    with store.connect() as rconn:
        result = rconn.execution_options(stream_results=True, yield_per=1000).execute(
            sa.select(journal.c.source, journal.c.subject, journal.c.time, journal.c.data)
            .order_by(journal.c.seq))
        for rows in result.partitions():
            batch = []
            for source, subject, when, data in rows:
                res = orjson.loads(data)
                rtype, rid = subject.split("/", 1)
                batch.append({"rtype": rtype, "id": f"{source}/{rid}",
                              "ord": order_key(res, when), "body": data.decode()})
            with store.begin() as conn:
                conn.execute(upsert, batch)
            n += len(batch)
    settle(store)  # what it wrote, in the database, as for the hub's below
    elapsed = time.perf_counter() - started
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT COUNT(*) FROM bare_latest")).scalar_one()
    return n / elapsed, rows


def hub_rebuild_rate(store, workers: int = 0) -> tuple[float, int]:
    settle(store)
    started = time.perf_counter()
    n = rebuild(store, SharedRecordProjection(), workers=workers)
    settle(store)
    elapsed = time.perf_counter() - started
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT COUNT(*) FROM record_resources")).scalar_one()
    return n / elapsed, rows
