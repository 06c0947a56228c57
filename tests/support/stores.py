"""Store URLs for the behaviour tests that run on every backend."""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa

from hub.store.db import Store, open_store

PG_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_schema_url() -> tuple[str, str] | None:
    """A fresh schema in the test PostgreSQL, as (url with search_path, schema); None if
    no server answers."""
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
    except Exception:
        return None
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def sqlite_with(projection) -> tuple[Store, dict[str, sa.Table]]:
    """An in-memory SQLite store holding ``projection``'s tables, and the tables."""
    store = open_store("sqlite://")
    tables = projection.tables(sa.MetaData())
    with store.begin() as conn:
        for t in tables.values():
            t.create(conn)
    return store, tables
