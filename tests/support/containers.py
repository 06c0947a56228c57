"""Containers for the tests: the images `scripts/containers.py up` built, started through
testcontainers on the host's network (every port on 127.0.0.1, none published).

`up` leaves a status file: the image tags, or the one sentence saying why Docker is not
available here, which every container test gives as its skip reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

from hub.log.broker import BUNDLED_CLUSTER_ID, free_port

ROOT = Path(__file__).resolve().parents[2]
STATUS = Path(os.environ.get("HUB_CONTAINERS_STATUS", ROOT / ".venv" / "containers.json"))
LABELS = {"org.hie-hub.test": "1"}  # what `scripts/containers.py down` removes
APACHE_KAFKA_IMAGE = os.environ.get("HUB_TEST_KAFKA_IMAGE", "apache/kafka:3.9.1")


@cache
def status() -> dict:
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return {"ready": False, "reason": "Docker was not set up for this run: `make containers` "
                "(scripts/containers.py up, as root) installs, starts and builds it"}


def image(role: str) -> str:
    """The local image for ``role`` (broker, postgres, hub, base), or skip saying why none."""
    s = status()
    if not s.get("ready"):
        pytest.skip(f"container tests: {s.get('reason')}")
    return s["images"][role]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([status().get("docker", "docker"), *args], capture_output=True,
                          text=True, check=check, timeout=120)


@cache
def apache_kafka_available() -> bool:
    """An Apache Kafka image is here (loaded by hand: no registry is reachable on the test
    machines); testcontainers' KafkaContainer then runs the contract suite too."""
    return bool(status().get("ready")) and docker(
        "image", "inspect", APACHE_KAFKA_IMAGE, check=False).returncode == 0


def _container(role: str):
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    # Ryuk (the reaper) is an image from a registry; `down` removes our containers instead.
    testcontainers_config.ryuk_disabled = True
    return DockerContainer(image(role)).with_kwargs(network_mode="host", labels=LABELS)


@contextmanager
def broker_container() -> Iterator[str]:
    """The bundled broker as a container (FROM scratch + Tansu); yields its bootstrap."""
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    container = (_container("broker")
                 .with_command(["--listener-url", url, "--advertised-listener-url", url,
                                "--cluster-id", BUNDLED_CLUSTER_ID])
                 .waiting_for(LogMessageWaitStrategy("ready in").with_startup_timeout(30)))
    with container:
        yield f"127.0.0.1:{port}"


@contextmanager
def apache_kafka_container() -> Iterator[str]:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.kafka import KafkaContainer

    testcontainers_config.ryuk_disabled = True
    with KafkaContainer(APACHE_KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@contextmanager
def postgres_container() -> Iterator[str]:
    """PostgreSQL (Debian's, on the local Debian base) on its own port: the machine's own
    holds 5432 on the same network. Yields a URL to its database `test`."""
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    container = (_container("postgres").with_env("PGPORT", str(port))
                 .waiting_for(LogMessageWaitStrategy("ready to accept connections")
                              .with_startup_timeout(60)))
    with container:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
