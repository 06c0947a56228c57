"""A real Kafka protocol endpoint for contract tests.

Default: the bundled broker (Tansu). ``HUB_TEST_KAFKA=testcontainers`` with a working Docker
starts Apache Kafka in KRaft mode through testcontainers instead; the tests are the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hub.log.broker import EmbeddedBroker, free_port


@contextmanager
def kafka_endpoint() -> Iterator[tuple[str, bool]]:
    """Yield (bootstrap, idempotence supported)."""
    if os.environ.get("HUB_TEST_KAFKA") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        image = os.environ.get("HUB_TEST_KAFKA_IMAGE", "apache/kafka:3.9.1")
        with KafkaContainer(image).with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), True
        return
    with EmbeddedBroker(free_port()) as broker:
        yield broker.bootstrap, False
