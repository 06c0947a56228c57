"""Shared fixtures: one real broker per session, unique topics per test, every store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hub.config import Settings, Topics
from hub.identity import use_identity_secret
from hub.log.topics import ensure_topics
from hub.signing import demo_signer, use_hub_signer
from hub.store.db import open_store
from tests.support.kafka import kafka_endpoint
from tests.support.stores import drop_schema, postgres_schema_url


@pytest.fixture(autouse=True)
def hub_signer():
    """The gateway signs with the hub's key; code under test outside a running Hub (which
    loads its own, process-wide) signs with the demo hub key. Per test, so a Hub started by
    an earlier test does not leave its key behind."""
    use_hub_signer(demo_signer("hub"))
    use_identity_secret(b"test-identity-secret-0123456789")


@pytest.fixture(scope="session")
def kafka() -> tuple[str, bool]:
    with kafka_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def make_settings(kafka, tmp_path: Path):
    """Settings on the session broker with topics and groups no other test uses."""
    bootstrap, idempotent = kafka

    def make(**overrides) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values = dict(
            kafka_bootstrap=bootstrap, enable_idempotence=idempotent,
            topics=Topics(inbound=f"t{tag}.inbound", events=f"t{tag}.events",
                          deadletter=f"t{tag}.deadletter", lab=f"t{tag}.lab",
                          imaging=f"t{tag}.imaging", recognition=f"t{tag}.recognition"),
            group_prefix=f"g{tag}", data_dir=tmp_path, events_partitions=3,
            session_timeout_ms=6000,
        )
        values.update(overrides)
        s = Settings(**values)
        ensure_topics(s)
        return s

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    found = postgres_schema_url()
    if found is None:
        pytest.skip("no PostgreSQL reachable at HUB_TEST_POSTGRES_URL / 127.0.0.1:5432 (db test)")
    url, schema = found
    yield url
    drop_schema(schema)


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.dispose()
