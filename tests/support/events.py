"""Publishing test events straight to a topic, as the gateway or ingest stage would."""

from __future__ import annotations

import orjson

from hub.config import Settings
from hub.envelope import Envelope, new_event
from hub.facilities import load_directory, sign
from hub.fhir import patient_key
from hub.log.producer import Publisher

DIRECTORY = load_directory(None)


def envelope(resource: dict, facility: str = "township-1", action: str = "upsert") -> Envelope:
    f = DIRECTORY.get(facility)
    data = b"" if action == "delete" else orjson.dumps(resource)
    env = new_event(facility, resource["resourceType"], resource["id"],
                    patient_key(facility, resource), data, action=action)
    return sign(env, f.secret)


async def publish(settings: Settings, envelopes: list[Envelope], topic: str | None = None
                  ) -> None:
    pub = await Publisher(settings).start()
    try:
        await pub.publish(topic or settings.topics.events, envelopes)
    finally:
        await pub.stop()
