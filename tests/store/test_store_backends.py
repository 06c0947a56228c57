"""The store's behaviour, written once and run on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hub.engine import tracking
from hub.engine.projection import Increment, Upsert
from hub.engine.writer import write
from hub.errors import StoreError
from hub.store.db import open_store

md = sa.MetaData()
T = sa.Table("t_rows", md, sa.Column("k", sa.String(20), primary_key=True),
             sa.Column("g", sa.String(20)), sa.Column("v", sa.Integer))
C = sa.Table("t_counts", md, sa.Column("k", sa.String(20), primary_key=True),
             sa.Column("n", sa.Integer, nullable=False), sa.Column("last", sa.String(20)))
TABLES = {"t_rows": T, "t_counts": C}


@pytest.fixture
def tables(store):
    with store.begin() as conn:
        md.create_all(conn)
    return store


def rows(store, table):
    with store.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(table)))


def test_guarded_upsert_keeps_the_newest_even_within_one_batch(tables):
    with tables.begin() as conn:
        write(conn, TABLES, [Upsert("t_rows", {"k": "a", "g": "2", "v": 2}, ("k",), "g"),
                             Upsert("t_rows", {"k": "a", "g": "1", "v": 1}, ("k",), "g"),
                             Upsert("t_rows", {"k": "b", "g": "1", "v": 1}, ("k",), "g")])
    with tables.begin() as conn:
        write(conn, TABLES, [Upsert("t_rows", {"k": "a", "g": "3", "v": 3}, ("k",), "g"),
                             Upsert("t_rows", {"k": "b", "g": "0", "v": 0}, ("k",), "g")])
    assert rows(tables, T) == [("a", "3", 3), ("b", "1", 1)]


def test_insert_if_absent_and_increments(tables):
    with tables.begin() as conn:
        write(conn, TABLES, [
            Upsert("t_rows", {"k": "x", "g": "1", "v": 1}, ("k",), replace=False),
            Upsert("t_rows", {"k": "x", "g": "9", "v": 9}, ("k",), replace=False),
            Increment("t_counts", {"k": "c"}, {"n": 1}, {"last": "2026-01-02"}),
            Increment("t_counts", {"k": "c"}, {"n": 2}, {"last": "2026-01-01"})])
    with tables.begin() as conn:
        write(conn, TABLES, [Increment("t_counts", {"k": "c"}, {"n": 4}, {"last": "2025"})])
    assert rows(tables, T) == [("x", "1", 1)]
    assert rows(tables, C) == [("c", 7, "2026-01-02")]


def test_positions_and_applied_ids(store):
    with store.begin() as conn:
        tracking.save_positions(conn, "c", "events", "tid-1", {0: 5, 1: 9})
        tracking.save_positions(conn, "c", "events", "tid-1", {1: 12})
        tracking.save_positions(conn, "c", "events", "tid-2", {0: 1})
        assert tracking.new_event_ids(conn, "c", ["a", "b", "a"]) == {"a", "b"}
        assert tracking.new_event_ids(conn, "c", ["b", "c"]) == {"c"}
    with store.connect() as conn:
        assert tracking.load_positions(conn, "c", "events", "tid-1") == {0: 5, 1: 12}
        assert tracking.load_positions(conn, "c", "events", "tid-2") == {0: 1}


def test_a_failed_transaction_leaves_nothing(tables):
    with pytest.raises(StoreError), tables.begin() as conn:
        write(conn, TABLES, [Upsert("t_rows", {"k": "y", "g": "1", "v": 1}, ("k",))])
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert rows(tables, T) == []


def test_driver_errors_are_translated(tmp_path):
    with pytest.raises(StoreError, match="cannot open store"):
        open_store("nosuchdialect://x")
    with pytest.raises(StoreError, match="OperationalError"):
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")


def test_changes_of_different_shapes_keep_their_order(tables):
    with tables.begin() as conn:
        write(conn, TABLES, [Upsert("t_rows", {"k": "z", "g": "1", "v": 1}, ("k",)),
                             Upsert("t_rows", {"k": "z", "v": 2}, ("k",)),
                             Upsert("t_rows", {"k": "z", "g": "3", "v": 3}, ("k",))])
    assert rows(tables, T) == [("z", "3", 3)]
