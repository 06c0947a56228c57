"""Store URLs for the behaviour tests that run on every backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.store.db import Store, open_store

PG_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_schema_url(base_url: str = PG_URL) -> tuple[str, str] | None:
    """A fresh schema in the test PostgreSQL (or the one at ``base_url``), as (url with
    search_path, schema); None if no server answers."""
    try:
        engine = sa.create_engine(base_url, connect_args={"connect_timeout": 3})
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
    except Exception:
        return None
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str, base_url: str = PG_URL) -> None:
    engine = sa.create_engine(base_url)
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


@contextmanager
def backend_store_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL for one backend: a SQLite file, a fresh schema in the machine's
    PostgreSQL, or (``postgres-container``) one in the session's PostgreSQL container."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    base = request.getfixturevalue("postgres_container_url") if kind == "postgres-container" \
        else PG_URL
    found = postgres_schema_url(base)
    if found is None:
        pytest.skip("no PostgreSQL reachable at HUB_TEST_POSTGRES_URL / 127.0.0.1:5432 (db test)")
    url, schema = found
    yield url
    drop_schema(schema, base)
