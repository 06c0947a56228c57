"""The contract suite runs on every backend: the bundled broker process with SQLite and the
machine's PostgreSQL, and containers started by testcontainers (the broker image, Apache
Kafka where its image is here, PostgreSQL on its own port). Same tests, one id per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.containers import apache_kafka_available
from tests.support.stores import backend_store_url

CONTAINERS = pytest.mark.containers
POSTGRES = pytest.mark.postgres


def _brokers() -> list:
    brokers = ["bundled", pytest.param("broker-container", marks=CONTAINERS)]
    if apache_kafka_available():
        brokers.append(pytest.param("apache-kafka", marks=CONTAINERS))
    return brokers


def _pairs() -> list:
    """(broker, store) for tests that use both: each store once, not every combination."""
    pairs = [pytest.param("bundled", "sqlite", id="bundled-sqlite"),
             pytest.param("bundled", "postgres", id="bundled-postgres", marks=POSTGRES),
             pytest.param("broker-container", "postgres-container", id="containers",
                          marks=CONTAINERS)]
    if apache_kafka_available():
        pairs.append(pytest.param("apache-kafka", "postgres-container",
                                  id="apache-kafka-containers", marks=CONTAINERS))
    return pairs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = set(metafunc.fixturenames)
    if "kafka" not in names:
        return
    if "store_url" in names:
        metafunc.parametrize(("kafka", "store_url"), _pairs(), indirect=True)
    else:
        metafunc.parametrize("kafka", _brokers(), indirect=True)


@pytest.fixture
def store_url(request, tmp_path: Path) -> str:
    """Parametrised above (with the broker it is paired with), not by its own params."""
    with backend_store_url(request, request.param, tmp_path) as url:
        yield url
