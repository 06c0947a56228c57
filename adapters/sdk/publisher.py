"""Publishing with kafka-python, the client facility integrators already know.

    from adapters.sdk import FacilityPublisher
    with FacilityPublisher("kafka:9092", "village-3", secret) as pub:
        pub.publish(observation_dict)

Events go to ``hie.inbound.v1``; the hub's ingest stage verifies the signature and validates
before anything reaches the shared log, and dead-letters (with an OperationOutcome) the rest.
"""

from __future__ import annotations

from typing import Any

import orjson
from kafka import KafkaProducer

from hub.envelope import Envelope, new_event
from hub.facilities import sign
from hub.fhir import patient_key

INBOUND_TOPIC = "hie.inbound.v1"


def build_envelope(facility_id: str, secret: str, resource: dict[str, Any],
                   action: str = "upsert") -> Envelope:
    """A signed envelope for ``resource`` (which must carry its facility-local ``id``)."""
    if not resource.get("id") or not resource.get("resourceType"):
        raise ValueError("the resource needs resourceType and id")
    data = b"" if action == "delete" else orjson.dumps(resource)
    env = new_event(facility_id, resource["resourceType"], resource["id"],
                    patient_key(facility_id, resource), data, action=action)
    return sign(env, secret)


class FacilityPublisher:
    """A kafka-python producer bound to one facility's identity and key."""

    def __init__(self, bootstrap: str, facility_id: str, secret: str,
                 topic: str = INBOUND_TOPIC, enable_idempotence: bool = False) -> None:
        self.facility_id = facility_id
        self._secret = secret
        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5,
            enable_idempotence=enable_idempotence, client_id=f"facility-{facility_id}",
            max_request_size=16 * 1024 * 1024)

    def publish(self, resource: dict[str, Any], action: str = "upsert"):
        """Queue one event; returns kafka-python's future. Call flush() to wait for acks."""
        env = build_envelope(self.facility_id, self._secret, resource, action)
        return self._producer.send(self.topic, key=env.key.encode(), value=env.data,
                                   headers=env.headers())

    def publish_raw(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]):
        return self._producer.send(self.topic, key=key, value=value, headers=headers)

    def flush(self, timeout: float | None = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> FacilityPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.close()
