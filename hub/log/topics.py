"""Topic creation and identity (Kafka topic ids) via kafka-python's admin client."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from hub.config import Settings
from hub.errors import BrokerError
from hub.log.broker import BUNDLED_CLUSTER_ID


class TopicMissing(BrokerError):
    """The broker answers but has no such topic (a bundled broker restarted empty)."""


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


def ensure_topics(settings: Settings, timeout: float | None = None,
                  more: Mapping[str, int] | None = None) -> None:
    """Create the hub's topics if missing, and ``more`` (topic → partitions: an app's own);
    existing topics are left as they are. Gives up after ``timeout`` (default: the
    settings' ``broker_wait_seconds``) if Kafka is silent."""
    timeout = settings.broker_wait_seconds if timeout is None else timeout
    t = settings.topics
    wanted = {t.inbound: settings.events_partitions, t.events: settings.events_partitions,
              t.deadletter: 1, t.lab: settings.events_partitions,
              t.imaging: settings.events_partitions,
              t.recognition: settings.events_partitions,
              t.receipts: settings.events_partitions,
              t.referral: settings.events_partitions,
              t.alerts: settings.events_partitions, **(more or {})}
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
    if info.get("error_code") == 3:  # UNKNOWN_TOPIC_OR_PARTITION
        raise TopicMissing(f"topic {topic} does not exist on {bootstrap}")
    if info.get("error_code"):
        raise BrokerError(f"topic {topic} is not available (error {info['error_code']})")
    topic_id = str(info.get("topic_id") or "") or f"name:{topic}"
    return topic_id, len(info["partitions"])


_seen: dict[tuple[str, str], tuple[float, tuple[str, int]]] = {}
_seen_lock = threading.Lock()


def log_identity(settings: Settings, topic: str, timeout: float = 3.0,
                 max_age: float = 0.0) -> tuple[str, int]:
    """``topic_identity``, re-creating the hub's topics first if the broker lost them.

    A bundled broker that restarted has no topics; whoever needs one creates it, with the
    configured partition counts (a producer's auto-create would pick the broker's default).
    Bounded by ``timeout`` so that a caller asked to stop is not held for long. An answer
    younger than ``max_age`` seconds is reused: every runner of a process checks the same
    topic periodically, and one admin connection per period is enough for all of them."""
    key = (settings.bootstrap, topic)
    with _seen_lock:  # one check at a time per process; the others reuse its answer
        at, found = _seen.get(key, (0.0, ("", 0)))
        if max_age and time.monotonic() - at < max_age:
            return found
        try:
            found = topic_identity(settings.bootstrap, topic, timeout)
        except TopicMissing:
            ensure_topics(settings, timeout)
            found = topic_identity(settings.bootstrap, topic, timeout)
        _seen[key] = (time.monotonic(), found)
        return found




def durable_ack(settings: Settings) -> bool:
    """Whether an acknowledgement must wait for the SQL journal (``HUB_ACK_AFTER``; by
    default: yes when the broker is the bundled one, whose log is in memory only, whether
    this process started it or found it at ``--kafka``)."""
    if settings.ack_after is not None or settings.embedded:
        return settings.durable_ack
    admin = _admin(settings.bootstrap, settings.broker_wait_seconds)
    try:
        cluster = admin.describe_cluster()
    except KafkaError as exc:
        raise BrokerError(f"cannot ask {settings.bootstrap} what it is: {exc}") from exc
    finally:
        admin.close()
    return cluster.get("cluster_id") == BUNDLED_CLUSTER_ID
