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
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Compiled, Connection

from hub.engine import tracking
from hub.engine.projection import Change, Event, Projection
from hub.engine.writer import write
from hub.envelope import now_rfc3339
from hub.errors import HubError
from hub.store.db import CACHE_KIB, Store
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
            batch_size: int = 1000, workers: int = 0) -> int:
    """Replay the whole journal into fresh tables and swap them in. Returns events applied.

    ``workers``: processes that parse and fold pages beside this one, which writes, for a
    projection that allows it (``parallel_fold``) and a journal of ``PARALLEL_FROM`` rows or
    more; the tables come out the same either way."""
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
        count, max_seq, positions = _fold(store, projection, shadow, batch_size, progress,
                                          workers)
    finally:
        gc.unfreeze()
    with temp_on_disk(store) as bulk, store.begin(on=bulk) as conn:
        for t in shadow.values():
            for index in t.indexes:
                index.create(conn)
    _swap(store, projection, shadow, epoch, positions, max_seq)
    return count


_COLUMNS = [journal.c.event_id, journal.c.source, journal.c.type, journal.c.subject,
            journal.c.time, journal.c.key, journal.c.data, journal.c.seq, journal.c.topic,
            journal.c.topic_id, journal.c.partition, journal.c.offset]
_PAGE = (sa.select(*_COLUMNS)
         .where(journal.c.seq > sa.bindparam("after"), journal.c.seq <= sa.bindparam("upto"))
         .order_by(journal.c.seq).limit(sa.bindparam("size")))
BULK_CACHE_KIB = 16384  # page cache, and so in-memory sort, of the index build and drops
# Events written to the shadow tables per transaction: tens of MB, which the WAL holds until
# the commit (a bounded amount, whatever the journal's length).
COMMIT_EVENTS = 20_000
# Below this many journal rows, starting worker processes costs more than they save.
PARALLEL_FROM = 50_000


def default_workers() -> int:
    """Fold workers ``hub rebuild`` starts unless told: one per CPU (this process mostly
    writes, and waits on the database while it does)."""
    return os.cpu_count() or 1


Positions = dict[tuple[str, str, int], int]
Page = tuple[int, int, Positions, list[Change]]  # events, last seq, positions, changes


def _fold_rows(projection: Projection, rows: Sequence[Any]) -> Page:
    """One page of journal rows through ``projection``."""
    # Where the journal stood, per log partition, for the rows folded: noted on the way, as
    # a GROUP BY afterwards would read the whole journal a second time.
    positions: Positions = {}
    for r in rows:
        where = (r[8], r[9], r[10])
        if r[11] > positions.get(where, -1):
            positions[where] = r[11]
    changes = projection.apply([Event(*r[:7]) for r in rows])
    return len(rows), rows[-1][7], positions, changes


def _read_page(conn: Connection, after: int, upto: int, size: int) -> list[Any]:
    # On the driver's cursor: plain tuples, no SQLAlchemy row per journal row (a tenth of
    # a fold worker's time went there).
    compiled, names = _page_sql(conn.dialect)
    params = compiled.construct_params({"after": after, "upto": upto, "size": size})
    raw = conn.connection.dbapi_connection
    cur = raw.cursor()
    try:
        cur.execute(compiled.string, tuple(params[n] for n in names))
        rows = cur.fetchall()
    finally:
        cur.close()
    # One short read per page, not one cursor over the whole journal: an open read keeps
    # SQLite from checkpointing past it (the WAL would grow by everything this rebuild
    # writes) and PostgreSQL from vacuuming behind it.
    raw.rollback()
    return rows


_page_sqls: dict[str, tuple[Compiled, tuple[str, ...]]] = {}


def _page_sql(dialect: sa.Dialect) -> tuple[Compiled, tuple[str, ...]]:
    """The page query compiled with positional parameters, and the parameter each takes."""
    found = _page_sqls.get(dialect.name)
    if found is None:
        if not dialect.positional:
            dialect = type(dialect)(paramstyle="format")
        compiled = _PAGE.compile(dialect=dialect)
        found = _page_sqls[dialect.name] = (compiled, tuple(compiled.positiontup or ()))
    return found


def _fold(store: Store, projection: Projection, shadow: dict[str, sa.Table], batch_size: int,
          progress: Progress | None, workers: int) -> tuple[int, int, Positions]:
    """Fold the journal through ``projection`` into ``shadow``; (events, last seq, positions)."""
    count = 0
    positions: Positions = {}
    with store.connect() as rconn, store.connect() as wconn:
        # What the journal holds now; events archived meanwhile reach the swapped-in tables
        # through the live runners, which resume from the positions noted here.
        first, upto = rconn.execute(sa.select(sa.func.min(journal.c.seq),
                                              sa.func.max(journal.c.seq))).one()
        first, upto = (first or 1), (upto or 0)
        rconn.rollback()
        if (workers and getattr(projection, "parallel_fold", False)
                and upto - first + 1 >= PARALLEL_FROM):
            pages: Iterator[Page] = _pages_on_workers(store, projection, first - 1, upto,
                                                      batch_size, workers)
        else:
            pages = _pages_inline(rconn, projection, upto, batch_size)
        last = 0
        for group in _commit_groups(pages):
            # One transaction for several pages: each commit writes every page it dirtied to
            # the WAL again, and the primary-key index takes its rows in no useful order, so
            # small commits rewrote most of its leaves each time (a gigabyte at a million).
            # The shadow tables are nobody's until the swap: a crash loses only this work.
            with store.begin(on=wconn) as conn:
                for n, seq, where, changes in group:
                    last = seq
                    for k, off in where.items():
                        if off > positions.get(k, -1):
                            positions[k] = off
                    write(conn, shadow, changes)
                    count += n
            if progress is not None:
                progress(sum(page[0] for page in group))
        if store.is_sqlite:
            # The pool lends this connection out again, with its page cache emptied: full
            # of the shadow table's pages, it would stay beside the one of the connection
            # building the indexes (+55 MB at a million events, where the peak grew with
            # the journal).
            wconn.exec_driver_sql("PRAGMA shrink_memory")
            wconn.commit()
    return count, last, positions


def _commit_groups(pages: Iterator[Page]) -> Iterator[list[Page]]:
    """``pages`` (empty ones dropped) in runs of about ``COMMIT_EVENTS`` events, one
    transaction each."""
    group: list[Page] = []
    events = 0
    for page in pages:
        if not page[0]:
            continue  # a page of seq values no row took
        group.append(page)
        events += page[0]
        if events >= COMMIT_EVENTS:
            yield group
            group, events = [], 0
    if group:
        yield group


def _pages_inline(conn: Connection, projection: Projection, upto: int, size: int
                  ) -> Iterator[Page]:
    after = 0
    while after < upto:
        rows = _read_page(conn, after, upto, size)
        if not rows:
            return
        page = _fold_rows(projection, rows)
        after = page[1]
        yield page


_worker: dict[str, Any] = {}


def _start_worker(url: str, projection: Projection, secret: bytes | None) -> None:
    from hub.identity import use_identity_secret
    from hub.store.db import open_store
    from hub.worker_process import start_worker

    start_worker()  # pages of rows die young here too; and leave with the parent
    if secret is not None:
        use_identity_secret(secret)
    _worker["store"] = open_store(url, create=False)
    _worker["projection"] = projection


def _fold_on_worker(after: int, upto: int) -> Page:
    with _worker["store"].connect() as conn:
        rows = _read_page(conn, after, upto, upto - after)
    return _fold_rows(_worker["projection"], rows) if rows else (0, upto, {}, [])


def _pages_on_workers(store: Store, projection: Projection, after: int, upto: int,
                      size: int, workers: int) -> Iterator[Page]:
    """The same pages folded by ``workers`` processes, handed back in journal order.

    For a projection whose ``apply`` depends on each event alone (``parallel_fold``): the
    parse and fold of one page needs nothing from the page before, so several processes fold
    while this one writes what they return, in order. At most two pages per worker are in
    flight, so memory stays the same whatever the journal's length.
    """
    from hub.identity import current_identity_secret

    url = store.engine.url.render_as_string(hide_password=False)
    # spawn, not fork: the process calling may run threads (Kafka clients, the SQL pool).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker,
                             initargs=(url, projection, current_identity_secret())) as pool:
        pending: deque[Future[Page]] = deque()
        lo = after
        try:
            while True:
                while lo < upto and len(pending) < 2 * workers:
                    # Pages by seq alone, nothing read here: seq counts up by one a row, so
                    # a page holds ``size`` rows at most (fewer where a sequence skipped).
                    hi = min(lo + size, upto)
                    pending.append(pool.submit(_fold_on_worker, lo, hi))
                    lo = hi
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


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
    with temp_on_disk(store, drop=True) as bulk, store.begin(on=bulk) as conn:
        prep = conn.dialect.identifier_preparer
        for table in live.values():
            conn.execute(sa.text(
                f"DROP TABLE IF EXISTS {prep.quote(retired_name(table.name, epoch))}"))


_SECURE_DELETE = {0: "OFF", 1: "ON", 2: "FAST"}  # as SQLite reads it: as it is set again


@contextmanager
def temp_on_disk(store: Store, drop: bool = False) -> Iterator[Connection]:
    """A connection whose temporary data goes to temporary files, not to memory as the
    store's connections keep it: building an index sorts every row, and dropping a table
    keeps a copy of each page it frees until the statement ends; in memory, a rebuild's
    peak grew with the table (dropping the 300,000-row table a rebuild retires: +340 MB).

    ``drop``: for dropping retired tables, whose pages SQLite (as Debian builds it, with
    secure_delete on) would otherwise overwrite with zeros one by one, a gigabyte of writes
    at a million events. Their rows are the journal's events folded, and the journal keeps
    those in the same file, so zeroing them hid nothing."""
    with store.connect() as conn:
        # On the driver's connection: SQLite refuses the change inside a transaction, and
        # SQLAlchemy would open one around the statement.
        raw = conn.connection.driver_connection if store.is_sqlite else None
        secure_delete = None
        if raw is not None:
            raw.execute("PRAGMA temp_store=FILE")
            # SQLite sorts in memory up to the cache size before it spills to files: the
            # index build's sort grew the peak with the table until that limit (+55 MB
            # from 300,000 to 1,000,000 rows). A table scan needs few cached pages.
            raw.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            if drop:
                # The build's own setting comes back after.
                secure_delete = raw.execute("PRAGMA secure_delete").fetchone()[0]
                raw.execute("PRAGMA secure_delete=FAST")
        try:
            yield conn
        finally:
            if raw is not None:  # the pool lends this connection out again
                raw.execute("PRAGMA temp_store=MEMORY")
                raw.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                if secure_delete is not None:
                    raw.execute(f"PRAGMA secure_delete={_SECURE_DELETE[secure_delete]}")


def retired_name(table: str, epoch: int) -> str:
    return f"{table}__r{epoch}"
