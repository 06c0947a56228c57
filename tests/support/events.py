"""Publishing test events straight to a topic, as the gateway or ingest stage would."""

from __future__ import annotations

import orjson

from hub.config import Settings
from hub.envelope import Envelope, new_event
from hub.fhir import patient_key
from hub.log.producer import Publisher
from hub.signing import demo_signer


def envelope(resource: dict, facility: str = "township-1", action: str = "upsert") -> Envelope:
    data = b"" if action == "delete" else orjson.dumps(resource)
    env = new_event(facility, resource["resourceType"], resource["id"],
                    patient_key(facility, resource), data, action=action)
    return demo_signer(facility).sign(env)


async def publish(settings: Settings, envelopes: list[Envelope], topic: str | None = None
                  ) -> None:
    pub = await Publisher(settings).start()
    try:
        await pub.publish(topic or settings.topics.events, envelopes)
    finally:
        await pub.stop()


async def read_json_topic(settings: Settings, topic: str, n: int, timeout: float = 45.0
                          ) -> list[dict]:
    """The first ``n`` JSON messages of ``topic`` (fewer if ``timeout`` passes first), read
    as a downstream consumer would: a plain Kafka consumer from the earliest offset."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out += [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out
