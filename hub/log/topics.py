"""Topic creation and identity (Kafka topic ids) via kafka-python's admin client."""

from __future__ import annotations

import contextlib
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from hub.config import Settings
from hub.errors import BrokerError


def _admin(bootstrap: str, timeout: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            # The client's own bootstrap wait (30 s by default) must not outlast ours.
            return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="hub-admin",
                                    request_timeout_ms=10000,
                                    bootstrap_timeout_ms=max(100, int(left * 1000)))
        except KafkaError as exc:
            last = exc
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:g}s "
                      f"({last}); is it running, and is --kafka / HUB_KAFKA_BOOTSTRAP right?")


def ensure_topics(settings: Settings, timeout: float | None = None) -> None:
    """Create the hub's topics if missing; existing topics are left as they are. Gives up
    after ``timeout`` (default: the settings' ``broker_wait_seconds``) if Kafka is silent."""
    timeout = settings.broker_wait_seconds if timeout is None else timeout
    t = settings.topics
    wanted = {t.inbound: settings.events_partitions, t.events: settings.events_partitions,
              t.deadletter: 1, t.lab: settings.events_partitions,
              t.imaging: settings.events_partitions,
              t.recognition: settings.events_partitions}
    admin = _admin(settings.bootstrap, timeout)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, parts, settings.replication_factor)
               for name, parts in wanted.items() if name not in existing]
        if new:
            # Another hub process may win the race to create them; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        # Metadata propagates asynchronously on real clusters: wait until all are visible.
        deadline = time.monotonic() + timeout
        while set(wanted) - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {sorted(set(wanted) - existing)} did not appear")
            time.sleep(0.1)
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics on {settings.bootstrap}: {exc}") from exc
    finally:
        admin.close()


def topic_identity(bootstrap: str, topic: str, timeout: float = 30.0) -> tuple[str, int]:
    """(topic id, partition count). A broker that lost its log gives a new topic id."""
    admin = _admin(bootstrap, timeout)
    try:
        info = admin.describe_topics([topic])[0]
    except KafkaError as exc:
        raise BrokerError(f"cannot describe topic {topic}: {exc}") from exc
    finally:
        admin.close()
    if info.get("error_code"):
        raise BrokerError(f"topic {topic} is not available (error {info['error_code']})")
    topic_id = str(info.get("topic_id") or "") or f"name:{topic}"
    return topic_id, len(info["partitions"])
