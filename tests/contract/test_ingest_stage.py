"""hie.inbound.v1 -> ingest stage -> hie.events.v1 / hie.deadletter.v1, on a real broker,
with events published by the facility SDK (kafka-python)."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from adapters.sdk import FacilityPublisher, build_envelope
from hub.envelope import Envelope
from hub.facilities import load_directory, sign
from hub.ingest.checks import EdgeChecks
from hub.ingest.stage import IngestStage
from hub.log.inspect import read_deadletters
from hub.log.producer import Publisher
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.contract]
VILLAGE, SECRET = "village-1", "demo-secret-village-1"


async def events_in(settings) -> list[Envelope]:
    consumer = AIOKafkaConsumer(settings.topics.events, bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            out += [Envelope.from_record(m.headers, m.key, m.value)
                    for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
async def test_only_verified_valid_events_enter_the_log(make_settings, workers):
    settings = make_settings(validation_workers=workers)
    good = [patient("p1"), observation("o1", pid="p1")]
    sdk = FacilityPublisher(settings.bootstrap, VILLAGE, SECRET, topic=settings.topics.inbound)
    for r in good:
        sdk.publish(r)
    sdk.publish({"resourceType": "Observation", "id": "o2", "subject":
                 {"reference": "Patient/p1"}})  # invalid: no status, code, effective
    forged = build_envelope(VILLAGE, "demo-secret-village-2", patient("p9"))
    stranger = build_envelope("nowhere", SECRET, patient("p8"))
    impostor = dataclasses.replace(build_envelope(VILLAGE, SECRET, patient("p7")),
                                   source="urn:hie:facility:township-1")
    wrong_key = dataclasses.replace(build_envelope(VILLAGE, SECRET, patient("p6")),
                                    key="village-1.someone-else")
    wrong_key = sign(wrong_key, SECRET)
    mismatch = build_envelope(VILLAGE, SECRET, {**patient("p5")})
    mismatch = sign(dataclasses.replace(mismatch, subject="Patient/p4"), SECRET)
    for env in (forged, stranger, impostor, wrong_key, mismatch):
        sdk.publish_raw(env.key.encode(), env.data, env.headers())
    sdk.publish_raw(b"k", b"{}", [("ce_id", b"x")])  # not a CloudEvent at all
    sdk.flush()
    sdk.close()

    pub = await Publisher(settings).start()
    try:
        directory = load_directory(None)
        checks = EdgeChecks(settings, directory)
        stage = IngestStage(settings, directory, pub, checks)
        stats = await asyncio.wait_for(stage.run(until_caught_up=True), 90)
    finally:
        await pub.stop()
        checks.close()
    assert (stats.accepted, stats.rejected) == (2, 7)

    accepted = await events_in(settings)
    assert [e.subject for e in accepted] == ["Patient/p1", "Observation/o1"]
    assert all(e.key == "village-1.p1" and e.signature for e in accepted)
    assert orjson.loads(accepted[1].data)["status"] == "final"

    dead = {d["reason"].split(":")[0]: d for d in await read_deadletters(settings, 20)}
    assert set(dead) == {"invalid-resource", "bad-credential", "key-mismatch",
                         "subject-mismatch", "bad-envelope"}
    reasons = " | ".join(d["reason"] for d in await read_deadletters(settings, 20))
    assert "bad signature" in reasons and "unknown facility 'nowhere'" in reasons
    assert "missing CloudEvents header(s)" in reasons
    oo = orjson.loads(dead["invalid-resource"]["outcome"])
    assert {e for i in oo["issue"] for e in i["expression"]} >= {"Observation.status",
                                                                 "Observation.code"}
