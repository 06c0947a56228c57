"""Shared fixtures: one real broker per session, unique topics per test, every store."""

from __future__ import annotations

import os
import uuid

# A fixed width inherited from the runner (pytest-xdist workers get one) would freeze the
# CLI's rich consoles at it; tests that read tables set COLUMNS for the command they run.
os.environ.pop("COLUMNS", None)
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from hub import clock
from hub.config import Settings, Topics
from hub.identity import use_identity_secret
from hub.log.topics import ensure_topics
from hub.signing import demo_signer, use_hub_signer
from hub.store.db import open_store
from tests.support.clocks import SEED, SEED_ENV, TestClock, chosen_clocks
from tests.support.containers import postgres_container
from tests.support.kafka import kafka_endpoint
from tests.support.stores import backend_store_url

# Property tests judge rules, not speed: on a busy 2-core machine one example can take a
# second (a first import, a GC pause), and a deadline would fail a correct rule.
hypothesis_settings.register_profile("hub", deadline=None)
hypothesis_settings.load_profile("hub")


def pytest_report_header() -> str:
    return (f"time-sensitive tests run at: {', '.join(c.name for c in chosen_clocks())} "
            f"(reproduce a random date with {SEED_ENV}={SEED})")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hub_clock" in metafunc.fixturenames:
        clocks = chosen_clocks()
        metafunc.parametrize("hub_clock", clocks, indirect=True, ids=[c.name for c in clocks])


@pytest.fixture
def hub_clock(request, monkeypatch):
    """Run the test, and every hub process it starts, with the clock shifted to one of
    ``HUB_TEST_CLOCKS``. Dates in such a test are written relative to ``hub_clock.day``."""
    # On top of a shift the whole run may have been given (HUB_CLOCK_OFFSET).
    shift = request.param.offset + clock.parse_offset(os.environ.get(clock.OFFSET_ENV) or "0")
    monkeypatch.setenv(clock.OFFSET_ENV, f"{shift.total_seconds():.0f}")
    previous = clock.use_clock(clock.SystemClock(shift))
    yield TestClock(request.param.name, shift)
    clock.use_clock(previous)


@pytest.fixture(autouse=True)
def hub_signer():
    """The gateway signs with the hub's key; code under test outside a running Hub (which
    loads its own, process-wide) signs with the demo hub key. Per test, so a Hub started by
    an earlier test does not leave its key behind."""
    use_hub_signer(demo_signer("hub"))
    use_identity_secret(b"test-identity-secret-0123456789")


@pytest.fixture(scope="session")
def kafka(request) -> tuple[str, bool]:
    """The session's broker: the bundled one, or the kind a test is parametrised with
    (the contract tests run on every kind, tests/contract/conftest.py)."""
    with kafka_endpoint(getattr(request, "param", None)) as endpoint:
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
                          imaging=f"t{tag}.imaging", recognition=f"t{tag}.recognition",
                          receipts=f"t{tag}.receipts",
                          referral=f"t{tag}.referral",
                          alerts=f"t{tag}.alerts"),
            group_prefix=f"g{tag}", data_dir=tmp_path, events_partitions=3,
            session_timeout_ms=6000,
            # One hub per test reads every partition itself; tests of group behaviour
            # (replicas sharing partitions) ask for consumer_groups=True.
            consumer_groups=False,
        )
        values.update(overrides)
        s = Settings(**values)
        ensure_topics(s)
        return s

    return make


@pytest.fixture(scope="session")
def postgres_container_url() -> str:
    """PostgreSQL in a container (its own port), once per session; skips where Docker is not."""
    with postgres_container() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    with backend_store_url(request, request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.dispose()
