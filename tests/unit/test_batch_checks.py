"""The edge checks a batch step by step (every record read, then every signature, then every
model validation): each verdict must be the one that record gets alone, whatever else is in
the batch and in whatever order."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.fhir import validate, validate_many
from hub.ingest.verdict import check_inbound, check_inbound_many
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer
from tests.support.events import envelope
from tests.support.resources import observation, patient

DIRECTORY = load_directory(None)

RESOURCES = [
    patient("p1"),
    observation("o1"),
    {**observation("o2"), "status": "guessed"},  # not in the value set
    {**observation("o3"), "effectivePeriod": {"start": "2024-02-01", "end": "2024-01-01"}},
    {**observation("o4"), "note": [{"text": ""}]},  # ele-1
    {"resourceType": "Observation"},  # nothing required is there
    {"resourceType": "Basic", "id": "b1"},  # not a type the hub accepts
    {"resourceType": "Spaceship", "id": "s1"},  # not a FHIR type at all
    {"id": "x"},  # no resourceType
    ["not", "an", "object"],
    {**patient("p2"), "birthDate": "1990-13-45"},
    {**observation("o5"), "subject": {"reference": "#p1"}, "contained": 1},
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(range(len(RESOURCES))), min_size=1, max_size=12))
def test_a_batch_validates_each_resource_as_alone(picks):
    batch = [RESOURCES[i] for i in picks]
    expected = ["Observation" if i == 1 else None for i in picks]
    assert validate_many(batch, expected, [None] * len(batch)) == [
        validate(r, e) for r, e in zip(batch, expected, strict=True)]


def _record(env, timestamp_ms: int | None = None):
    return (env.headers(), env.key.encode(), env.data, timestamp_ms)


def _records() -> list[tuple]:
    good = [envelope(patient("p1")), envelope(observation("o1")),
            envelope(patient("p3"), facility="village-1")]
    bad_json = demo_signer("township-1").sign(
        dataclasses.replace(envelope(observation("o6")), data=b"{not json"))
    tampered = dataclasses.replace(good[1], data=orjson.dumps(observation("o1", value=9.9)))
    wrong_key = dataclasses.replace(envelope(observation("o7")), key="township-1.p9")
    wrong_key = demo_signer("township-1").sign(wrong_key)
    batch = demo_signer("township-1").sign_batch(
        [envelope(observation(f"m{i}")) for i in range(3)])
    unsigned = (good[0].headers()[:-1], good[0].key.encode(), good[0].data, None)
    return [_record(e) for e in good] + [
        _record(envelope(RESOURCES[2])),  # invalid resource
        _record(envelope(observation("o8"), action="delete")),
        _record(bad_json), _record(tampered), _record(wrong_key),
        (good[0].headers(), b"", good[0].data, None),  # no key: not an envelope
        unsigned,
        _record(envelope(observation("o9"), facility="city-1"), 1),  # before the key existed
    ] + [_record(e) for e in batch]


RECORDS = _records()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(range(len(RECORDS))), min_size=1, max_size=15))
def test_a_batch_of_inbound_records_gets_each_records_own_verdict(picks):
    batch = [RECORDS[i] for i in picks]
    alone = [check_inbound(DIRECTORY, *r) for r in batch]
    assert check_inbound_many(DIRECTORY, batch) == alone


def test_the_pool_covers_every_kind_of_verdict():
    reasons = {v.reason for v in check_inbound_many(DIRECTORY, RECORDS)}
    assert {"", "invalid-resource", "invalid-json", "bad-signature", "key-mismatch",
            "bad-envelope", "unsigned", "key-not-yet-valid"} <= reasons
