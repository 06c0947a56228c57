"""Turns projection changes into batched SQL on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hub.engine.projection import Change, Increment, Upsert, UpsertRows


def dialect_insert(conn: Connection, table: sa.Table):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def collapse(changes: Sequence[Change]) -> list[Change]:
    """Merge increments of the same row into one (a batch often counts many events against
    few rows); upserts pass through in order, since the driver applies executemany rows one
    after another and the guard keeps the newest. Increments come last, in key order:
    replicas counting into the same rows then lock them in one order, where arrival order
    made two PostgreSQL transactions wait on each other (a deadlock, seen with three
    projection replicas); adding up does not depend on the order."""
    out: list[Change] = []
    merged: dict[tuple, Increment] = {}
    for ch in changes:
        if not isinstance(ch, Increment):
            out.append(ch)
            continue
        k = (ch.table, *sorted(ch.keys.items()))
        prev = merged.get(k)
        if prev is None:
            merged[k] = ch
            continue
        counts = {c: prev.counts.get(c, 0) + n for c, n in ch.counts.items()}
        latest = dict(prev.latest)
        for c, v in ch.latest.items():
            latest[c] = max(latest.get(c, v), v)
        merged[k] = Increment(ch.table, ch.keys, counts, latest)
    return out + [merged[k] for k in sorted(merged, key=repr)]


def write(conn: Connection, tables: dict[str, sa.Table], changes: Sequence[Change]) -> None:
    """Execute ``changes`` in order inside the caller's transaction.

    Consecutive changes of the same shape (table, key, guard, columns) go to the driver as
    one executemany, so a projection whose rows share a shape costs one statement a batch;
    an :class:`UpsertRows` is such a run already, its tuples passed on as they are.
    """
    run: list[dict[str, Any]] = []
    head: Change | None = None
    prev: Change | None = None
    for ch in collapse(changes):
        if isinstance(ch, Upsert):
            if (isinstance(prev, Upsert) and ch.table == prev.table and ch.keys == prev.keys
                    and ch.guard == prev.guard and ch.replace == prev.replace
                    and ch.guard_against == prev.guard_against
                    and ch.row.keys() == prev.row.keys()):
                run.append(ch.row)  # the common case: same shape as the row before
                prev = ch
                continue
            row = ch.row
        elif isinstance(ch, UpsertRows):
            if head is not None:
                _execute(conn, tables, head, run)
            head, run, prev = None, [], None
            if ch.rows:
                _execute_rows(conn, tables[ch.table], ch)
            continue
        else:
            row = {**ch.keys, **ch.counts, **ch.latest}
        if head is not None:
            _execute(conn, tables, head, run)
        head, run, prev = ch, [row], ch
    if head is not None:
        _execute(conn, tables, head, run)


def _execute(conn: Connection, tables: dict[str, sa.Table], head: Change,
             rows: list[dict[str, Any]]) -> None:
    if isinstance(head, Upsert):
        shape: tuple = ("u", head.table, head.keys, head.guard, head.guard_against,
                        head.replace, tuple(head.row))
        columns = list(head.row)
    else:
        assert isinstance(head, Increment)
        shape = ("i", head.table, tuple(head.keys), tuple(head.counts), tuple(head.latest))
        columns = [*head.keys, *head.counts, *head.latest]
    sql, names = _compiled(conn, tables[head.table], head, shape, columns)
    # Straight to the driver: SQLAlchemy's per-row parameter processing costs more than the
    # insert itself on the rebuild path; every value here is already a plain type.
    pick = itemgetter(*names)
    conn.exec_driver_sql(sql, [pick(r) for r in rows] if len(names) > 1
                         else [(pick(r),) for r in rows])


def _execute_rows(conn: Connection, table: sa.Table, ch: UpsertRows) -> None:
    shape = ("u", ch.table, ch.keys, ch.guard, ch.guard_against, ch.replace, ch.columns)
    sql, names = _compiled(conn, table, ch, shape, list(ch.columns))
    if names == ch.columns:
        conn.exec_driver_sql(sql, ch.rows)
        return
    order = itemgetter(*(ch.columns.index(n) for n in names))
    conn.exec_driver_sql(sql, [order(r) if len(names) > 1 else (order(r),) for r in ch.rows])


_cache: dict[tuple, tuple[str, tuple[str, ...]]] = {}


def _compiled(conn: Connection, table: sa.Table, ch: Change, shape: tuple,
              columns: list[str]) -> tuple[str, tuple[str, ...]]:
    """The statement's SQL with positional parameters, and the column each one takes."""
    key = (conn.dialect.name, table.name, shape)
    found = _cache.get(key)
    if found is None:
        dialect = conn.dialect
        if not dialect.positional:
            # psycopg's default is named parameters; positional ones let the rows go to the
            # driver as tuples, like SQLite's, with no dict built per row.
            dialect = type(dialect)(paramstyle="format")
        compiled = _statement(conn, table, ch, columns).compile(dialect=dialect,
                                                               column_keys=columns)
        found = _cache[key] = (str(compiled), tuple(compiled.positiontup or ()))
    return found


def _statement(conn: Connection, table: sa.Table, ch: Change, columns: list[str]):
    ins = dialect_insert(conn, table)
    if isinstance(ch, Upsert | UpsertRows):
        update = {c: ins.excluded[c] for c in columns if c not in ch.keys}
        where = (ins.excluded[ch.guard] > table.c[ch.guard_against or ch.guard]) \
            if ch.guard else None
        if not update or not ch.replace:
            return ins.on_conflict_do_nothing(index_elements=list(ch.keys))
        return ins.on_conflict_do_update(index_elements=list(ch.keys), set_=update, where=where)
    update = {c: table.c[c] + ins.excluded[c] for c in ch.counts}
    for c in ch.latest:
        update[c] = sa.case((ins.excluded[c] > table.c[c], ins.excluded[c]), else_=table.c[c])
    return ins.on_conflict_do_update(index_elements=list(ch.keys), set_=update)
