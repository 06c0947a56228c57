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
