"""A real Kafka protocol endpoint for contract tests, of one of three kinds.

``bundled`` (the default): the bundled broker (Tansu) as a process. ``broker-container``: the
same broker as a container started by testcontainers (the local image, FROM scratch).
``apache-kafka``: Apache Kafka in KRaft mode through testcontainers' KafkaContainer, where
its image is on this machine. ``HUB_TEST_KAFKA`` picks the default kind; the tests are the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hub.log.broker import EmbeddedBroker, free_port
from tests.support.containers import apache_kafka_container, broker_container

KINDS = ("bundled", "broker-container", "apache-kafka")


@contextmanager
def kafka_endpoint(kind: str | None = None) -> Iterator[tuple[str, bool]]:
    """Yield (bootstrap, idempotence supported)."""
    kind = kind or os.environ.get("HUB_TEST_KAFKA") or "bundled"
    if kind in ("apache-kafka", "testcontainers"):
        with apache_kafka_container() as bootstrap:
            yield bootstrap, True
    elif kind == "broker-container":
        # Tansu rejects the idempotent producer whether it runs as a process or a container.
        with broker_container() as bootstrap:
            yield bootstrap, False
    elif kind == "bundled":
        with EmbeddedBroker(free_port()) as broker:
            yield broker.bootstrap, False
    else:
        raise ValueError(f"HUB_TEST_KAFKA={kind!r}: one of {', '.join(KINDS)}")
