"""Dead letters as plain values: the topic copy, the SQL header codec, time filters, access."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub import clock
from hub.access.rules import ALL, Principal, dead_letter_facilities
from hub.deadletters.letter import (
    about_record,
    about_resource,
    from_record,
    headers_from_json,
    headers_json,
    letter_id,
    refuse,
)
from hub.deadletters.read import make_filter, parse_instant
from hub.fhir import Issue


@pytest.fixture
def fixed_clock():
    previous = clock.use_clock(clock.FixedClock(datetime(2026, 11, 23, 1, 0, tzinfo=UTC)))
    yield
    clock.use_clock(previous)


def test_the_topic_copy_carries_the_original_and_reads_back_as_the_same_letter(fixed_clock):
    raw = bytes(range(256))  # not UTF-8, not JSON: kept exactly
    sent = [("ce_id", b"e-1"), ("ce_source", b"urn:hie:facility:village-1"),
            ("ce_subject", b"Patient/p1"), ("odd", b"\xff\xfe"), ("empty", None),
            ("hub_error_reason", b"an earlier refusal's"), ("hub_facility", b"forged")]
    letter = refuse("ingest", "bad-signature", raw, issues=[Issue("ce_signature", "bad")],
                    natural_key=("inbound", "tid", "t", 0, 7), key=b"village-1.p1",
                    headers=sent, origin="t/0/7", **about_record(sent, b"village-1.p1"))
    assert letter.refused_at == "2026-11-23T01:00:00.000000Z"
    assert (letter.facility, letter.event_id, letter.subject, letter.resource_type,
            letter.patient_key) == ("village-1", "e-1", "Patient/p1", "Patient",
                                    "village-1.p1")
    key, value, headers = letter.record()
    assert (key, value) == (b"village-1.p1", raw)
    names = [n for n, _ in headers]
    assert names.count("hub_error_reason") == 1 and names.count("hub_facility") == 1
    assert dict(headers)["hub_error_reason"] == b"bad-signature: bad"
    again = from_record(key, value, headers, "the reader's id", "never")
    assert again.id == "the reader's id" and again.refused_at == letter.refused_at
    assert (again.reason, again.detail, again.entry) == ("bad-signature", "bad", "ingest")
    assert again.outcome == letter.outcome and again.origin == "t/0/7"
    assert again.facility == "village-1"
    # the SQL copy keeps every header as it came, forged hub_* headers included
    assert headers_from_json(headers_json(letter.headers)) == sent


def test_ids_come_from_where_the_input_was_read():
    assert letter_id(("inbound", "tid", "t", 0, 7)) == letter_id(("inbound", "tid", "t", 0, 7))
    assert letter_id(("inbound", "tid", "t", 0, 7)) != letter_id(("inbound", "tid", "t", 0, 8))
    assert letter_id() != letter_id()


def test_what_a_refused_body_says_about_itself():
    obs = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}
    assert about_resource("township-1", obs) == {
        "resource_type": "Observation", "subject": "Observation/o1",
        "patient_key": "township-1.p1"}
    assert about_resource("township-1", [1, 2], "Observation", "o9") == {
        "resource_type": "Observation", "subject": "Observation/o9", "patient_key": None}
    assert about_resource("township-1", {"resourceType": 5, "id": {}}) == {
        "resource_type": None, "subject": None, "patient_key": None}
    long = refuse("gateway", "invalid-resource", b"", facility="x" * 500, subject="y" * 500)
    assert len(long.facility) == 64 and len(long.subject) == 200


def test_times_as_operators_type_them(fixed_clock):
    assert parse_instant("2026-11-23") == "2026-11-22T16:00:00.000000Z"  # consortium day
    assert parse_instant("2026-11-23", end=True) == "2026-11-23T16:00:00.000000Z"
    assert parse_instant("2026-11-23T08:00:00+08:00") == "2026-11-23T00:00:00.000000Z"
    assert parse_instant("2026-11-23T08:00:00") == "2026-11-23T00:00:00.000000Z"
    assert parse_instant("2h") == "2026-11-22T23:00:00.000000Z"
    for bad in ("yesterday", "2026-13-01", "9223372036854775808", "99999-01-01"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_instant(bad)
    f = make_filter(reason="a, b", facility=["x"], until="2026-11-23")
    assert f.reasons == ("a", "b") and f.facilities == ("x",)
    assert f.until == "2026-11-23T16:00:00.000000Z"


def test_who_reads_which_dead_letters():
    facility = Principal("facility", "township-1", frozenset({ALL}), frozenset({ALL}))
    ops = Principal("app", "ops", frozenset({ALL}), frozenset({"deadletters"}))
    scoped = Principal("app", "lab-ops", frozenset({"county-1"}), frozenset({"deadletters"}))
    reader = Principal("app", "dash", frozenset({ALL}), frozenset({ALL}))
    assert dead_letter_facilities(facility) == {"township-1"}
    assert dead_letter_facilities(ops) is None
    assert dead_letter_facilities(scoped) == {"county-1"}
    assert dead_letter_facilities(reader) == frozenset()  # '*' is not the deadletters scope
