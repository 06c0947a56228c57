from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from hub.record.rules import (
    delete_order,
    from_time_order,
    hub_id,
    order_key,
    order_time,
    present,
    utc_instant,
    version_order,
)
from tests.support.resources import observation


def test_present_rewrites_id_and_relative_references_only():
    obs = observation(pid="p1")
    obs["performer"] = [{"reference": "Organization/lab"}, {"reference": "urn:uuid:abc"}]
    obs["note"] = [{"text": 'see "reference":"Patient/p1" in the paper chart'}]
    out = present(orjson.dumps(obs), "township-2", "urn:hie:facility:township-2",
                  "2026-11-01T00:00:00.000000Z")
    assert out["id"] == "township-2.o1"
    assert out["subject"]["reference"] == "Patient/township-2.p1"
    assert out["performer"] == [{"reference": "Organization/township-2.lab"},
                                {"reference": "urn:uuid:abc"}]
    assert out["note"] == obs["note"], "text that looks like a reference is left alone"
    assert out["meta"]["source"] == "urn:hie:facility:township-2"
    assert out["meta"]["lastUpdated"] == obs["meta"]["lastUpdated"]
    spaced = present(b'{"resourceType":"Patient","id":"p","link":[{"other":{"reference" : '
                     b'"Patient/q"}}]}', "c-1", "urn:hie:facility:c-1", "2026-01-01T00:00:00Z")
    assert spaced["link"][0]["other"]["reference"] == "Patient/c-1.q"
    assert spaced["meta"]["lastUpdated"] == "2026-01-01T00:00:00Z"


def test_hub_id_round_trip():
    assert hub_id("village-3", "p-1.x") == "village-3.p-1.x"
    assert hub_id("village-3", "p-1.x").partition(".")[0] == "village-3"


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.sampled_from([UTC, None]))


@given(instants, st.integers(-14, 14))
def test_utc_instant_is_the_same_moment_in_any_offset(moment, hours):
    moment = moment.replace(tzinfo=UTC)
    shifted = moment.astimezone(__import__("datetime").timezone(timedelta(hours=hours)))
    assert utc_instant(moment.isoformat()) == utc_instant(shifted.isoformat())


@given(instants, instants, st.integers(1, 10**6), st.integers(1, 10**6),
       st.sampled_from(["versionId", "none"]))
def test_order_key_sorts_by_the_senders_version_then_last_updated(a, b, va, vb, numbered):
    a, b = a.replace(tzinfo=UTC), b.replace(tzinfo=UTC)
    if numbered == "versionId":
        ka = order_key({"meta": {"lastUpdated": a.isoformat(), "versionId": str(va)}}, "")
        kb = order_key({"meta": {"lastUpdated": b.isoformat(), "versionId": str(vb)}}, "")
        assert (ka < kb) == ((va, a) < (vb, b))
    else:  # no versionId: lastUpdated alone
        ka = order_key({"meta": {"lastUpdated": a.isoformat()}}, "")
        kb = order_key({"meta": {"lastUpdated": b.isoformat()}}, "")
        assert (ka < kb) == (a < b)
    assert order_time(ka) == utc_instant(a.isoformat())


def test_order_key_falls_back_to_event_time():
    key = order_key({}, "2026-11-01T00:00:00Z")
    assert order_time(key) == "2026-11-01T00:00:00.000000Z"
    # a numbered version outranks an unnumbered one, whenever each arrived
    assert order_key({"meta": {"versionId": "1"}}, "2000-01-01T00:00:00Z") > key


def test_a_deletion_sorts_after_the_version_it_names_and_before_the_next():
    v3 = order_key({"meta": {"versionId": "3", "lastUpdated": "2030-01-01T00:00:00Z"}}, "")
    gone = delete_order("3", "2026-11-01T00:00:00Z")
    v4 = order_key({"meta": {"versionId": "4"}}, "2026-10-01T00:00:00Z")
    assert v3 < gone < v4
    # unnumbered: by time, as before
    assert order_key({}, "2026-11-01T00:00:00Z") < delete_order(None, "2026-11-02T00:00:00Z")


def old_time_order(last_updated, version_id, event_time: str) -> str:
    """The time-first form the patient index's decisions on the log were written in."""
    when = utc_instant(last_updated or event_time)
    version = str(version_id or "0")
    return f"{when}|{int(version):012d}" if version.isdigit() else f"{when}|{version}"


version_ids = st.one_of(st.none(), st.integers(1, 10**15).map(str),
                        st.from_regex(r"[A-Za-z.\-][A-Za-z0-9.\-]{0,20}", fullmatch=True))


@given(st.one_of(st.none(), instants), instants, version_ids,
       st.from_regex(r"[0-9a-f\-]{8,36}", fullmatch=True))
def test_older_time_first_keys_read_as_version_order(updated, event_time, version, eid):
    lu = updated.isoformat() if updated else None
    et = event_time.replace(tzinfo=UTC).isoformat()
    new = version_order(lu, version, et) + f"|{eid}"
    assert from_time_order(old_time_order(lu, version, et) + f"|{eid}") == new
    assert from_time_order(new) == new  # already in version order: unchanged


def test_what_the_older_form_lost_still_sorts_with_the_version_it_named():
    et, later = "2026-11-01T00:00:00Z", "2026-11-01T00:00:01Z"
    for version, after in (("0", version_order(None, None, later)),
                           ("01", version_order(None, "2", et))):
        own = version_order(None, version, et) + "|e"
        read = from_time_order(old_time_order(None, version, et) + "|e")
        assert own <= read < after + "|f"  # decided; a later version is not


def test_national_ids_are_hashed_in_place_exactly_as_by_re_serialising():
    import orjson

    from hub.demo.population import PopulationSimulator, SimFacility
    from hub.identity import redact_body, redact_identifiers

    sim = PopulationSimulator([SimFacility("township-1", "township-centre"),
                               SimFacility("county-1", "county-hospital")], seed=4)
    patients = [r for _, r in (sim.next_event() for _ in range(3000))
                if r["resourceType"] == "Patient"]
    with_id = [p for p in patients if "urn:oid:2.16.156.10011.1.1" in str(p)]
    assert len(with_id) > 20
    for p in patients:
        raw = orjson.dumps(p)
        redacted = redact_body(raw, p)
        assert orjson.loads(redacted) == redact_identifiers(p)
        for i in p["identifier"]:
            if i["system"] == "urn:oid:2.16.156.10011.1.1":
                assert i["value"].encode() not in redacted
    # A number spelled with escapes falls back to re-serialising, and is still hashed.
    p = with_id[0]
    nid = next(i["value"] for i in p["identifier"] if "10011" in i["system"])
    escaped = orjson.dumps(p).replace(nid.encode(), nid[:-1].encode() + b"\\u00" +
                                      f"{ord(nid[-1]):02x}".encode())
    assert orjson.loads(redact_body(escaped, orjson.loads(escaped))) == redact_identifiers(p)


_ALPHABET = "0123456789-+:TZ .W"


@st.composite
def _timestamps(draw):
    """Whole-second timestamps in the quick reading's shapes, some of them bent."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    hours = draw(st.integers(-23, 23))
    minutes = draw(st.sampled_from([0, 0, 0, 30, 45]))
    text = moment.replace(microsecond=0).isoformat()
    if draw(st.booleans()):
        text += "Z"
    else:
        sign = "-" if hours < 0 else "+"
        text += f"{sign}{abs(hours):02d}:{minutes:02d}"
    for _ in range(draw(st.integers(0, 2))):  # a character or two replaced
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(_ALPHABET)) + text[at + 1:]
    return text


@given(st.one_of(_timestamps(), st.text(_ALPHABET, min_size=20, max_size=25)))
@example("2026-11-30T08:75:00+08:00")  # no such minute
@example("2026-11-30T08:15:60Z")  # no such second
@example("2026-11-30T08:15:00+08:30")  # not a whole hour: the full reading
@example("2026-02-29T08:15:00+08:00")  # no such day in 2026
@example("2024-03-01T03:15:00+08:00")  # back across a leap day
def test_the_quick_reading_of_an_instant_is_the_full_one(text):
    from hub.record.rules import _utc_instant

    assert utc_instant(text) == _utc_instant(text)
    assert utc_instant(text) == _utc_instant(text)  # again, from the remembered hour
