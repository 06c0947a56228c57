"""Turns projection changes into batched SQL on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hub.engine.projection import Change, Increment, Upsert


def _insert(conn: Connection, table: sa.Table):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def collapse(changes: Sequence[Change]) -> list[Change]:
    """Merge changes to the same row so one statement never touches a row twice.

    Guarded upserts keep the row with the greatest guard (first one on a tie, as SQL would);
    unguarded ones keep the last; increments add up.
    """
    out: dict[tuple, Change] = {}
    for ch in changes:
        if isinstance(ch, Upsert):
            k = ("u", ch.table, *(ch.row[c] for c in ch.keys))
            prev = out.get(k)
            if (prev is None or ch.guard is None
                    or ch.row[ch.guard] > prev.row[ch.guard]):  # type: ignore[union-attr]
                out[k] = ch
        else:
            k = ("i", ch.table, *sorted(ch.keys.items()))
            prev = out.get(k)
            if prev is None:
                out[k] = ch
            else:
                assert isinstance(prev, Increment)
                counts = {c: prev.counts.get(c, 0) + n for c, n in ch.counts.items()}
                latest = dict(prev.latest)
                for c, v in ch.latest.items():
                    latest[c] = max(latest.get(c, v), v)
                out[k] = Increment(ch.table, ch.keys, counts, latest)
    return list(out.values())


def write(conn: Connection, tables: dict[str, sa.Table], changes: Sequence[Change]) -> None:
    """Execute ``changes`` inside the caller's transaction, one executemany per shape."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    shapes: dict[tuple, Change] = {}
    for ch in collapse(changes):
        if isinstance(ch, Upsert):
            shape = ("u", ch.table, ch.keys, ch.guard, tuple(ch.row))
            groups.setdefault(shape, []).append(ch.row)
        else:
            shape = ("i", ch.table, tuple(ch.keys), tuple(ch.counts), tuple(ch.latest))
            groups.setdefault(shape, []).append({**ch.keys, **ch.counts, **ch.latest})
        shapes.setdefault(shape, ch)
    for shape, rows in groups.items():
        ch = shapes[shape]
        table = tables[ch.table]
        conn.execute(_statement(conn, table, ch), rows)


def _statement(conn: Connection, table: sa.Table, ch: Change):
    ins = _insert(conn, table)
    if isinstance(ch, Upsert):
        update = {c: ins.excluded[c] for c in ch.row if c not in ch.keys}
        where = (ins.excluded[ch.guard] > table.c[ch.guard]) if ch.guard else None
        if not update:
            return ins.on_conflict_do_nothing(index_elements=list(ch.keys))
        return ins.on_conflict_do_update(index_elements=list(ch.keys), set_=update, where=where)
    update = {c: table.c[c] + ins.excluded[c] for c in ch.counts}
    for c in ch.latest:
        update[c] = sa.case((ins.excluded[c] > table.c[c], ins.excluded[c]), else_=table.c[c])
    return ins.on_conflict_do_update(index_elements=list(ch.keys), set_=update)
