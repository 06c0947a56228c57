"""Rebuilding a projection from the journal into shadow tables, swapped in atomically.

Steps, in order:

1. Create empty shadow tables (``<table>__s<epoch+1>``) beside the live ones.
2. Read the journal in ``seq`` order, a page at a time, fold it through the projection,
   write the shadow tables in batched transactions, then build their secondary indexes. The
   live tables keep answering reads all along.
3. In ONE transaction: check nobody else swapped meanwhile, rename the live tables aside and
   the shadow ones into their place, replace the projection's positions and applied ids with
   those of the journal rows read, and bump the projection's epoch. Live runners see the new
   epoch on their next batch and seek to the swapped-in positions, so events the journal had
   not yet archived are applied afterwards, once. Then the old tables are dropped.

A crash before step 3 leaves the live tables untouched (and a stale shadow that the next
rebuild drops); step 3 is all or nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import sqlalchemy as sa

from hub.engine import tracking
from hub.engine.projection import Event, Projection
from hub.engine.writer import write
from hub.envelope import now_rfc3339
from hub.errors import HubError
from hub.store.db import Store
from hub.store.schema import applied, journal

Progress = Callable[[int], None]


def consumer_name(projection: Projection) -> str:
    return f"projection:{projection.name}"


def live_tables(projection: Projection) -> dict[str, sa.Table]:
    return projection.tables(sa.MetaData(), "")


def ensure_built(store: Store, projection: Projection, progress: Progress | None = None
                 ) -> dict[str, sa.Table]:
    """Live tables of ``projection``, created if new and rebuilt if its version changed."""
    tables = live_tables(projection)
    if not getattr(projection, "rebuildable", True):
        return tables
    with store.begin() as conn:
        store.serialise(conn, "schema")
        state = tracking.projection_state(conn, projection.name)
        if state is None:
            for t in tables.values():
                t.create(conn, checkfirst=True)
            tracking.set_projection_state(conn, projection.name, projection.version, 0)
            return tables
    if state[0] != projection.version:
        rebuild(store, projection, progress)
    return tables


def journal_size(store: Store) -> int:
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(journal)).scalar_one()


def rebuild(store: Store, projection: Projection, progress: Progress | None = None,
            batch_size: int = 1000) -> int:
    """Replay the whole journal into fresh tables and swap them in. Returns events applied."""
    if not getattr(projection, "rebuildable", True):
        raise HubError(f"projection {projection.name} cannot be rebuilt (it is the journal)")
    with store.connect() as conn:
        state = tracking.projection_state(conn, projection.name)
    epoch = state[1] if state else 0
    shadow_md = sa.MetaData()
    shadow = projection.tables(shadow_md, f"__s{epoch + 1}")
    with store.begin() as conn:
        for t in shadow.values():
            t.drop(conn, checkfirst=True)
            # Secondary indexes come after the bulk load: building one at the end is much
            # cheaper than maintaining it row by row.
            conn.execute(sa.schema.CreateTable(t))

    # The fold allocates a few objects per event; without this, every full collection
    # would rescan the whole long-lived heap (large in a busy process) again and again.
    gc.freeze()
    try:
        count, max_seq, positions = _fold(store, projection, shadow, batch_size, progress)
    finally:
        gc.unfreeze()
    with store.begin() as conn:
        for t in shadow.values():
            for index in t.indexes:
                index.create(conn)
    _swap(store, projection, shadow, epoch, positions, max_seq)
    return count


def _fold(store: Store, projection: Projection, shadow: dict[str, sa.Table], batch_size: int,
          progress: Progress | None) -> tuple[int, int, dict[tuple[str, str, int], int]]:
    """Fold the journal through ``projection`` into ``shadow``; (events, last seq, positions)."""
    count = 0
    # Where the journal stood, per log partition, for the rows folded: noted on the way, as
    # a GROUP BY afterwards would read the whole journal a second time.
    positions: dict[tuple[str, str, int], int] = {}
    cols = [journal.c.event_id, journal.c.source, journal.c.type, journal.c.subject,
            journal.c.time, journal.c.key, journal.c.data, journal.c.seq, journal.c.topic,
            journal.c.topic_id, journal.c.partition, journal.c.offset]
    after = sa.bindparam("after")
    page = (sa.select(*cols).where(journal.c.seq > after, journal.c.seq <= sa.bindparam("upto"))
            .order_by(journal.c.seq).limit(batch_size))
    with store.connect() as rconn:
        # What the journal holds now; events archived meanwhile reach the swapped-in tables
        # through the live runners, which resume from the positions noted here.
        upto = rconn.execute(sa.select(sa.func.max(journal.c.seq))).scalar_one() or 0
        last = 0
        while last < upto:
            rows = rconn.execute(page, {"after": last, "upto": upto}).all()
            # One short read per page, not one cursor over the whole journal: an open read
            # keeps SQLite from checkpointing past it (the WAL would grow by everything this
            # rebuild writes) and PostgreSQL from vacuuming behind it.
            rconn.rollback()
            if not rows:
                break
            events = [Event(*r[:7]) for r in rows]
            for r in rows:
                where = (r[8], r[9], r[10])
                if r[11] > positions.get(where, -1):
                    positions[where] = r[11]
            last = rows[-1][7]
            changes = projection.apply(events)
            with store.begin() as wconn:
                write(wconn, shadow, changes)
            count += len(events)
            if progress is not None:
                progress(len(events))
    return count, last, positions


def _swap(store: Store, projection: Projection, shadow: dict[str, sa.Table], epoch: int,
          positions: dict[tuple[str, str, int], int], max_seq: int) -> None:
    name = consumer_name(projection)
    live = live_tables(projection)
    with store.begin() as conn:
        state = tracking.projection_state(conn, projection.name)
        if (state[1] if state else 0) != epoch:
            raise HubError(f"projection {projection.name} was rebuilt by someone else meanwhile")
        prep = conn.dialect.identifier_preparer
        existing = set(sa.inspect(conn).get_table_names())
        for key, table in live.items():
            # Renames only, so the write lock is held for an instant; the old rows are
            # dropped after the swap has committed.
            if table.name in existing:
                conn.execute(sa.text(f"ALTER TABLE {prep.quote(table.name)} RENAME TO "
                                     f"{prep.quote(retired_name(table.name, epoch))}"))
            conn.execute(sa.text(
                f"ALTER TABLE {prep.quote(shadow[key].name)} RENAME TO {prep.quote(table.name)}"))
        tracking.clear_positions(conn, name)
        by_topic: dict[tuple[str, str], dict[int, int]] = {}
        for (topic, tid, part), off in positions.items():
            by_topic.setdefault((topic, tid), {})[part] = off
        for (topic, tid), offsets in by_topic.items():
            tracking.save_positions(conn, name, topic, tid, offsets)
        if getattr(projection, "dedupe_by_event_id", True):
            conn.execute(sa.delete(applied).where(applied.c.consumer == name))
            conn.execute(sa.insert(applied).from_select(
                ["consumer", "event_id"],
                sa.select(sa.literal(name), journal.c.event_id).where(journal.c.seq <= max_seq)))
        tracking.set_projection_state(conn, projection.name, projection.version, epoch + 1,
                                      now_rfc3339())
    with store.begin() as conn:
        prep = conn.dialect.identifier_preparer
        for table in live.values():
            conn.execute(sa.text(
                f"DROP TABLE IF EXISTS {prep.quote(retired_name(table.name, epoch))}"))


def retired_name(table: str, epoch: int) -> str:
    return f"{table}__r{epoch}"
