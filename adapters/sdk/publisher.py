"""Publishing with kafka-python, the client facility integrators already know.

    from adapters.sdk import FacilityPublisher
    with FacilityPublisher.from_key_file("kafka:9092", "village-3#2", "village-3.pem") as pub:
        pub.publish(observation_dict)

The private key file is what ``hub facility add`` / ``hub facility rotate-key`` wrote; the
key id names it in the registry. Only the facility holds the private key.

Events go to ``hie.inbound.v1``; the hub's ingest stage verifies the signature and validates
before anything reaches the shared log, and dead-letters (with an OperationOutcome) the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from hub import clock
from hub.envelope import Envelope, new_event
from hub.fhir import patient_key
from hub.signing import Signer, key_owner, read_private_key

INBOUND_TOPIC = "hie.inbound.v1"


def build_envelope(signer: Signer, resource: dict[str, Any], action: str = "upsert",
                   facility_id: str | None = None) -> Envelope:
    """An envelope for ``resource`` (which must carry its facility-local ``id``), signed by
    ``signer``; from the key's owner unless ``facility_id`` says otherwise (tests of the
    hub's refusals use that)."""
    facility_id = facility_id or key_owner(signer.kid)
    if not resource.get("id") or not resource.get("resourceType"):
        raise ValueError("the resource needs resourceType and id")
    data = b"" if action == "delete" else orjson.dumps(resource)
    env = new_event(facility_id, resource["resourceType"], resource["id"],
                    patient_key(facility_id, resource), data, action=action)
    return signer.sign(env)


class FacilityPublisher:
    """A kafka-python producer bound to one facility's identity and key."""

    def __init__(self, bootstrap: str, signer: Signer,
                 topic: str = INBOUND_TOPIC, enable_idempotence: bool = False) -> None:
        self.facility_id = key_owner(signer.kid)
        self._signer = signer
        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5,
            enable_idempotence=enable_idempotence, client_id=f"facility-{self.facility_id}",
            max_request_size=16 * 1024 * 1024)

    def publish(self, resource: dict[str, Any], action: str = "upsert"):
        """Queue one event; returns kafka-python's future. Call flush() to wait for acks."""
        env = build_envelope(self._signer, resource, action)
        return self._producer.send(self.topic, key=env.key.encode(), value=env.data,
                                   headers=env.headers(), timestamp_ms=_now_ms())

    @classmethod
    def from_key_file(cls, bootstrap: str, kid: str, key_file: str | Path,
                      **kwargs: Any) -> FacilityPublisher:
        return cls(bootstrap, Signer(kid, read_private_key(Path(key_file))), **kwargs)

    def publish_raw(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]):
        return self._producer.send(self.topic, key=key, value=value, headers=headers,
                                   timestamp_ms=_now_ms())

    def flush(self, timeout: float | None = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> FacilityPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.close()


def _now_ms() -> int:
    # The record's timestamp is when it was published: the hub judges retired keys by it,
    # so it comes from the same clock as the registry's rotation times.
    return int(clock.now().timestamp() * 1000)
