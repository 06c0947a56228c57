"""hie.inbound.v1 -> ingest stage -> hie.events.v1 / hie.deadletter.v1, on a real broker,
with events published by the facility SDK (kafka-python)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from adapters.sdk import FacilityPublisher, build_envelope, build_envelopes
from hub import clock
from hub.deadletters.read import get_dead_letter, list_dead_letters
from hub.envelope import Envelope, new_event
from hub.facilities import Facility
from hub.ingest.checks import EdgeChecks
from hub.ingest.stage import IngestStage
from hub.log.inspect import read_deadletters
from hub.log.producer import Publisher
from hub.registry.consortium_file import load_directory, read_consortium, write_consortium
from hub.signing import Signer, demo_private_key, demo_signer
from hub.store.db import open_store
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.contract]
VILLAGE = "village-1"


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


def consortium_with_rotations(tmp_path) -> Path:
    """The demo consortium, where village-2 rotated its key an hour ago and village-3's old
    key was revoked (compromised) an hour ago."""
    c = read_consortium(None)
    hour_ago = clock.now() - timedelta(hours=1)
    for fid, revoke in (("village-2", False), ("village-3", True)):
        f = c.get(fid)
        c.put(Facility(f.record.with_rotated_key(demo_signer(fid, 2).public_key, hour_ago,
                                                 revoke_old=revoke), f.token))
    path = tmp_path / "consortium.yaml"
    write_consortium(c, path)
    return path


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
async def test_only_verified_valid_events_enter_the_log(make_settings, tmp_path, workers):
    settings = make_settings(validation_workers=workers,
                             facilities_file=consortium_with_rotations(tmp_path))
    village = demo_signer(VILLAGE)
    p1, o1 = build_envelope(village, patient("p1")), build_envelope(village, observation(
        "o1", pid="p1"))
    sdk = FacilityPublisher(settings.bootstrap, village, topic=settings.topics.inbound)
    for env in (p1, o1):
        sdk.publish_raw(env.key.encode(), env.data, env.headers())
    sdk.publish({"resourceType": "Observation", "id": "o2", "subject":
                 {"reference": "Patient/p1"}})  # invalid: no status, code, effective
    forged = build_envelope(Signer("village-1#1", demo_private_key("village-2")), patient("p9"))
    stranger = build_envelope(demo_signer("nowhere"), patient("p8"))
    impostor = build_envelope(village, patient("p7"), facility_id="township-1")
    retired = build_envelope(demo_signer("village-2", 1), patient("p10"))
    revoked = build_envelope(demo_signer("village-3", 1), patient("p11"))
    rotated = build_envelope(demo_signer("village-2", 2), patient("p12"))  # the new key: ok
    wrong_key = village.sign(dataclasses.replace(build_envelope(village, patient("p6")),
                                                 key="village-1.someone-else"))
    mismatch = build_envelope(village, {**patient("p5")})
    mismatch = village.sign(dataclasses.replace(mismatch, subject="Patient/p4"))
    for env in (forged, stranger, impostor, retired, revoked, rotated, wrong_key, mismatch,
                p1):  # p1 again, as another record: a replay
        sdk.publish_raw(env.key.encode(), env.data, env.headers())
    sdk.publish_raw(b"k", b"{}", [("ce_id", b"x")])  # not a CloudEvent at all
    sdk.flush()
    sdk.close()

    pub = await Publisher(settings).start()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        directory = load_directory(settings.facilities_file)
        checks = EdgeChecks(settings, directory)
        stage = IngestStage(settings, directory, pub, store, checks)
        stats = await asyncio.wait_for(stage.run(until_caught_up=True), 90)
        kept = {r.reason: r for r in list_dead_letters(store)}
        forged_row = get_dead_letter(store, kept["bad-signature"].id)
        envelope_row = get_dead_letter(store, kept["bad-envelope"].id)
    finally:
        await pub.stop()
        checks.close()
        store.dispose()
    assert (stats.accepted, stats.rejected) == (3, 10)
    # every refusal is in SQL too, byte for byte, with what the record claimed to be
    assert len(kept) == 10 and all(r.entry == "ingest" and r.published for r in kept.values())
    assert forged_row.original == forged.data and forged_row.key == forged.key.encode()
    assert dict(forged_row.headers)["ce_signature"] == forged.signature.encode()
    assert (forged_row.facility, forged_row.event_id, forged_row.subject) == (
        "village-1", forged.id, "Patient/p9")
    assert forged_row.origin.startswith(f"{settings.topics.inbound}/")
    assert (envelope_row.original, envelope_row.key, envelope_row.headers) == (
        b"{}", b"k", (("ce_id", b"x"),))
    assert kept["replayed"].event_id == p1.id

    accepted = await events_in(settings)
    assert sorted(e.subject for e in accepted) == ["Observation/o1", "Patient/p1",
                                                   "Patient/p12"]
    assert all(e.signature for e in accepted)
    assert orjson.loads(next(e for e in accepted if e.subject == "Observation/o1").data
                        )["status"] == "final"

    dead = {d["reason"].split(":")[0]: d for d in await read_deadletters(settings, 20)}
    assert set(dead) == {"invalid-resource", "bad-signature", "unknown-facility",
                         "source-mismatch", "key-retired", "key-revoked", "replayed",
                         "key-mismatch", "subject-mismatch", "bad-envelope"}
    reasons = " | ".join(d["reason"] for d in await read_deadletters(settings, 20))
    assert "bad signature" in reasons and "unknown facility 'nowhere'" in reasons
    assert "missing CloudEvents header(s)" in reasons
    assert f"event id {p1.id!r} was already accepted" in dead["replayed"]["reason"]
    oo = orjson.loads(dead["invalid-resource"]["outcome"])
    assert {e for i in oo["issue"] for e in i["expression"]} >= {"Observation.status",
                                                                 "Observation.code"}
    assert oo["issue"][0]["severity"] == "error"


async def test_a_redelivered_record_is_not_a_replay(make_settings, store):
    """After a crash before the inbound commit the same records come again: they must be
    appended again (the first append may be lost), not dead-lettered as replays; and a
    refused record handled twice is still one dead letter in SQL (on every store)."""
    settings = make_settings()
    village = demo_signer(VILLAGE)
    env = build_envelope(village, patient("p1"))
    forged = build_envelope(Signer("village-1#1", demo_private_key("village-2")), patient("p9"))
    sdk = FacilityPublisher(settings.bootstrap, village, topic=settings.topics.inbound)
    for e in (env, forged):
        sdk.publish_raw(e.key.encode(), e.data, e.headers())
    sdk.publish_raw(b"k", b"not json", [])  # not an envelope
    sdk.flush()
    sdk.close()
    pub = await Publisher(settings).start()
    try:
        directory = load_directory(None)
        for _ in range(2):  # two stages with fresh groups read the same records twice
            run = settings.model_copy(update={"group_prefix": settings.group_prefix + "x"})
            stage = IngestStage(run, directory, pub, store)
            stats = await asyncio.wait_for(stage.run(until_caught_up=True), 90)
            assert (stats.accepted, stats.rejected) == (1, 2)
            settings = run
    finally:
        await pub.stop()
    assert [e.id for e in await events_in(settings)] == [env.id, env.id]
    kept = list_dead_letters(store)
    assert sorted(r.reason for r in kept) == ["bad-envelope", "bad-signature"]
    assert {get_dead_letter(store, r.id).original for r in kept} == {forged.data, b"not json"}
    # the topic, being the feed, carries both deliveries
    assert len(await read_deadletters(settings, 10)) == 4


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
async def test_a_signed_batch_loses_only_its_tampered_member(make_settings, tmp_path, workers):
    """One manifest signature for a batch: the stage lets in every member that matches its
    digest, refuses the one that was altered on the way, refuses a batch another facility
    signed and a member sent again as another record; what it lets in verifies alone."""
    settings = make_settings(validation_workers=workers)
    village = demo_signer(VILLAGE)
    sdk = FacilityPublisher(settings.bootstrap, village, topic=settings.topics.inbound)
    clean = sdk.publish_many([patient(f"p{i}", f"MRN{i}") for i in range(3)])
    batch = build_envelopes(village, [patient("p3", "MRN3"), observation("o1", pid="p3"),
                                      observation("o2", pid="p3", value=7.2)])
    tampered = dataclasses.replace(batch[1], data=batch[1].data.replace(b"6.1", b"9.9"))
    # village-2 signs a manifest of events that claim to come from village-1
    impostor = demo_signer("village-2").sign_batch([new_event(
        VILLAGE, "Patient", pid, f"{VILLAGE}.{pid}", orjson.dumps(patient(pid)))
        for pid in ("p7", "p8")])
    forged = build_envelopes(Signer("village-1#1", demo_private_key("village-2")),
                             [patient("p9"), patient("p10")])
    for env in (batch[0], tampered, batch[2], *forged,
                impostor[0],
                batch[2]):  # batch[2] again, as another record: a replay
        sdk.publish_raw(env.key.encode(), env.data, env.headers())
    sdk.flush()
    sdk.close()

    pub = await Publisher(settings).start()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        directory = load_directory(None)
        checks = EdgeChecks(settings, directory)
        stage = IngestStage(settings, directory, pub, store, checks)
        stats = await asyncio.wait_for(stage.run(until_caught_up=True), 90)
        kept = sorted((r.reason, r.event_id) for r in list_dead_letters(store))
    finally:
        await pub.stop()
        checks.close()
        store.dispose()
    assert (stats.accepted, stats.rejected) == (5, 5)
    assert kept == sorted([("bad-signature", tampered.id), ("bad-signature", forged[0].id),
                           ("bad-signature", forged[1].id), ("source-mismatch", impostor[0].id),
                           ("replayed", batch[2].id)])
    accepted = await events_in(settings)
    assert sorted(e.id for e in accepted) == sorted([*clean, batch[0].id, batch[2].id])
    assert all(e.signature.startswith("ed25519-batch;kid=village-1#1;n=3;")
               for e in accepted)
    for e in accepted:  # each, later, on its own: nothing of its batch remembered
        assert load_directory(None).verify(e) == "village-1#1"
