"""Publishing test events straight to a topic, as the gateway or ingest stage would."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from pathlib import Path

import orjson

from hub.config import Settings
from hub.envelope import Envelope, new_event
from hub.fhir import patient_key
from hub.ingest.stage import IngestStage
from hub.log.inspect import read_deadletters
from hub.log.producer import Publisher
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer
from hub.store.db import open_store


def envelope(resource: dict, facility: str = "township-1", action: str = "upsert",
             members: Container[str] = ()) -> Envelope:
    """Signed as ``facility``; keyed as the gateway keys it, knowing the ``members``."""
    data = b"" if action == "delete" else orjson.dumps(resource)
    env = new_event(facility, resource["resourceType"], resource["id"],
                    patient_key(facility, resource, members), data, action=action)
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


async def ingest(settings: Settings, tmp_path: Path) -> tuple[int, int, list[dict]]:
    """Run the hub's ingest stage once over the inbound topic: (accepted, refused, dead letters)."""
    pub = await Publisher(settings).start()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        stage = IngestStage(settings, load_directory(None), pub, store)
        stats = await asyncio.wait_for(stage.run(until_caught_up=True), 90)
    finally:
        await pub.stop()
        store.dispose()
    return stats.accepted, stats.rejected, await read_deadletters(settings, 50)
