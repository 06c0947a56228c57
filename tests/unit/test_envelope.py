import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.envelope import Envelope, new_event, record_fields
from hub.errors import EnvelopeError

ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
facilities = st.from_regex(r"[a-z0-9][a-z0-9-]{0,39}", fullmatch=True)
types = st.sampled_from(["Patient", "Observation", "DiagnosticReport", "ImagingStudy"])


@given(facilities, types, ids, st.binary(min_size=1, max_size=200))
def test_round_trip_through_kafka_headers(facility, rtype, rid, data):
    env = new_event(facility, rtype, rid, f"{facility}.k", data).signed("hmac-sha256=ab")
    back = Envelope.from_record(env.headers(), env.key.encode(), env.data)
    assert back == env
    assert Envelope.from_record_checked(env.headers(), env.key.encode(), env.data) == env
    # The runners' quick reading gives the same fields.
    assert record_fields(env.headers(), env.key.encode(), env.data) == (
        env.id, env.source, env.type, env.subject, env.time, env.key, env.data, env.signature)
    assert back.facility_id == facility
    assert back.resource_type == rtype and back.resource_id == rid


def _headers(**changes):
    env = new_event("township-1", "Observation", "o1", "township-1.p1", b"{}")
    h = dict(env.headers())
    for k, v in changes.items():
        name = k.replace("content_type", "content-type")
        if v is None:
            h.pop(name, None)
        else:
            h[name] = v.encode()
    return list(h.items())


@pytest.mark.parametrize("changes, message", [
    ({"ce_id": None}, "missing CloudEvents header(s): ce_id"),
    ({"ce_source": None, "ce_time": None}, "ce_source, ce_time"),
    ({"ce_specversion": "0.3"}, "ce_specversion must be 1.0"),
    ({"ce_source": "township-1"}, "ce_source must be urn:hie:facility:"),
    ({"ce_type": "Observation.created"}, "ce_type must look like"),
    ({"ce_subject": "Observation"}, "ce_subject must be <Type>/<id>"),
    ({"ce_subject": "Patient/p1"}, "does not match ce_type"),
    ({"ce_time": "yesterday"}, "ce_time is not an RFC 3339"),
    ({"content_type": "text/plain"}, "content-type must be application/fhir+json"),
])
def test_malformed_headers_are_typed_errors(changes, message):
    with pytest.raises(EnvelopeError, match=re.escape(message)):
        Envelope.from_record(_headers(**changes), b"township-1.p1", b"{}")
    # Twice: the second meets what the first left in the quick reader's cache.
    for _ in range(2):
        with pytest.raises(EnvelopeError, match=re.escape(message)):
            record_fields(_headers(**changes), b"township-1.p1", b"{}")


@pytest.mark.parametrize("headers, key, value", [
    ([("ce_id", None)], b"k", b"{}"),
    ([("ce_id", b"a\x00b")], b"k", b"{}"),
    ([("content-type", b"text/plain\x00")], b"k", b"{}"),
    ([], b"k\x00", b"{}"),
    ([], None, b"{}"),
    ([], b"k", None),
    ([("ce_subject", b"Observation/" + b"x" * 65)], b"k", b"{}"),
    ([("ce_type", b"fhir.Observation.delete.v1")], b"k", b""),
    ([("ce_source", b"urn:hie:hub")], b"k", b"{}"),
    ([("ce_source", b"urn:hie:facility:Bad")], b"k", b"{}"),
    ([("ce_time", b"2026-11-01T08:00:00+08:00\n")], b"k", b"{}"),
    ([("traceparent", b"00-ab-cd-01")], b"k", b"{}"),
    ([("traceparent", b"\xff")], b"k", b"{}"),
    ([("traceparent", None)], b"k", b"{}"),
    ([("content-type", None)], b"k", b"{}"),
])
def test_quick_reader_accepts_exactly_what_from_record_accepts(headers, key, value):
    h = dict(_headers())
    h.update(headers)
    h = list(h.items())
    try:
        env = Envelope.from_record_checked(h, key, value)
    except EnvelopeError as exc:
        with pytest.raises(EnvelopeError, match=re.escape(str(exc))):
            record_fields(h, key, value)
        with pytest.raises(EnvelopeError, match=re.escape(str(exc))):
            Envelope.from_record(h, key, value)
    else:
        assert record_fields(h, key, value) == (
            env.id, env.source, env.type, env.subject, env.time, env.key, env.data,
            env.signature)
        assert Envelope.from_record(h, key, value) == env


def test_empty_key_and_missing_body_are_refused():
    with pytest.raises(EnvelopeError, match="key"):
        Envelope.from_record(_headers(), b"", b"{}")
    with pytest.raises(EnvelopeError, match="needs the resource JSON"):
        Envelope.from_record(_headers(), b"township-1.p1", b"")


def test_non_utf8_header_is_refused():
    headers = _headers()
    headers.append(("ce_subject", b"\xff\xfe"))
    with pytest.raises(EnvelopeError, match="not UTF-8"):
        Envelope.from_record(headers, b"k", b"{}")
    with pytest.raises(EnvelopeError, match="not UTF-8"):
        record_fields(headers, b"k", b"{}")
