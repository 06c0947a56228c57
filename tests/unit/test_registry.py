"""Registry rules: Organization round trip, key lifecycle, EQA windows, the consortium file."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import clock
from hub.envelope import new_event
from hub.errors import AuthError, ConfigError
from hub.facilities import Facility
from hub.fhir import validate
from hub.registry.consortium_file import Consortium, read_consortium, write_consortium
from hub.registry.model import (
    EQA_CATEGORIES,
    SERVICES,
    TIERS,
    FacilityRecord,
    Qualification,
    SigningKey,
    from_organization,
    to_organization,
)
from hub.signing import demo_signer, generate_key, public_key_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)

ids = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
# Text a store can hold: a name with NUL or a lone surrogate is refused with the file.
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=20).filter(str.strip)
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                        timezones=st.just(UTC))


@st.composite
def records(draw) -> FacilityRecord:
    fid = draw(ids)
    eqa = []
    for cat in draw(st.lists(st.sampled_from(EQA_CATEGORIES), unique=True)):
        a, b = sorted((draw(days), draw(days)))
        eqa.append(Qualification(cat, a, b))
    keys = tuple(
        SigningKey(f"{fid}#{n}", public_key_text(demo_signer(fid, n)._key), draw(instants),
                   draw(st.none() | instants), draw(st.none() | instants))
        for n in range(1, draw(st.integers(0, 3)) + 1))
    return FacilityRecord(
        fid, draw(names), draw(st.sampled_from(TIERS)),
        draw(st.none() | ids),
        tuple(sorted((s, draw(ids)) for s in draw(st.lists(st.sampled_from(SERVICES),
                                                            unique=True)))),
        tuple(eqa), keys, draw(st.booleans()),
        draw(st.none() | st.sampled_from(["Asia/Shanghai", "Asia/Urumqi", "Europe/Paris"])),
        tuple(draw(st.lists(names, max_size=2, unique=True))),
        tuple(sorted(draw(st.lists(ids, unique=True, max_size=3)))))


@given(records())
def test_organization_round_trip_is_exact_and_valid_fhir(rec):
    org = to_organization(rec)
    assert from_organization(org) == rec
    assert validate(org, "Organization") == []


def _event(signer, when: datetime | None = None):
    return signer.sign(new_event(signer.kid.split("#")[0], "Patient", "p1", "x.p1", b"{}"))


def test_rotation_retires_the_old_key_but_keeps_old_events_verifiable(hub_clock):
    c = read_consortium(None)
    old = c.get("village-1")
    rotated_at = clock.now() - timedelta(minutes=5)
    new_signer = demo_signer("village-1", 2)
    rec = old.record.with_rotated_key(new_signer.public_key, rotated_at)
    assert [k.kid for k in rec.keys] == ["village-1#1", "village-1#2"]
    assert rec.current_key().kid == "village-1#2"
    c.put(Facility(rec, old.token))
    d = c.directory()
    before, after = rotated_at - timedelta(seconds=1), rotated_at + timedelta(seconds=1)
    old_event = _event(demo_signer("village-1", 1))
    # Published before the rotation (an event in flight, or one in the archive): valid.
    assert d.verify(old_event, at=before) == "village-1#1"
    # Published after it with the old key: refused, with the reason.
    with pytest.raises(AuthError) as caught:
        d.verify(old_event, at=after)
    assert caught.value.reason == "key-retired"
    assert d.verify(_event(new_signer), at=after) == "village-1#2"


def test_a_revoked_key_is_refused_whatever_the_event_claims(hub_clock):
    c = read_consortium(None)
    f = c.get("village-2")
    revoked_at = clock.now() - timedelta(minutes=5)
    rec = f.record.with_rotated_key(demo_signer("village-2", 2).public_key, revoked_at,
                                    revoke_old=True)
    c.put(Facility(rec, f.token))
    d = c.directory()
    forged = _event(demo_signer("village-2", 1))
    with pytest.raises(AuthError) as caught:  # backdated: still refused at ingest
        d.verify(forged, at=revoked_at - timedelta(days=1))
    assert caught.value.reason == "key-revoked"
    # An archived event accepted before the compromise still checks out against history.
    early = revoked_at - timedelta(days=1)
    assert d.verify(forged, at=early, now=early) == "village-2#1"


def test_unknown_key_and_inactive_facility():
    c = read_consortium(None)
    d = c.directory()
    with pytest.raises(AuthError) as caught:
        d.verify(_event(demo_signer("village-3", 7)))
    assert caught.value.reason == "unknown-key"
    f = c.get("village-3")
    c.put(Facility(dataclasses.replace(f.record, active=False), f.token))
    with pytest.raises(AuthError) as caught:
        c.directory().verify(_event(demo_signer("village-3")))
    assert caught.value.reason == "inactive-facility"
    with pytest.raises(AuthError):
        c.directory().authenticate(f.token)


@given(st.dates(), st.dates(), st.dates())
def test_eqa_window_is_inclusive(a, b, day):
    lo, hi = sorted((a, b))
    q = Qualification("lab", lo, hi)
    assert q.covers(day) == (lo <= day <= hi)
    assert q.covers(lo) and q.covers(hi)


def test_set_eqa_replaces_the_window_of_its_category_only():
    rec = FacilityRecord("a", "A", "county-hospital", eqa=(
        Qualification("lab", date(2025, 1, 1), date(2025, 12, 31)),
        Qualification("ecg", date(2025, 1, 1), date(2025, 12, 31))))
    renewed = rec.with_eqa(Qualification("lab", date(2026, 1, 1), date(2026, 12, 31)))
    assert renewed.eqa_valid("lab", date(2026, 6, 1)) and not renewed.eqa_valid(
        "lab", date(2025, 6, 1))
    assert renewed.eqa_valid("ecg", date(2025, 6, 1))


def test_demo_registry_routes_reading_and_knows_eqa(hub_clock):
    c = read_consortium(None)
    assert c.get("township-1").record.reading_centre("imaging") == "county-1"
    assert c.get("community-1").record.reading_centre("ecg") == "city-1"
    assert c.get("city-1").record.eqa_valid("pathology", clock.today())
    assert not c.get("township-4").record.eqa_valid("lab", clock.today())  # lapsed
    assert "oncology" in c.get("city-1").record.referrals
    assert c.get("township-1").record.referrals == ("chronic-care", "rehabilitation")


def test_consortium_file_round_trip_and_checks(tmp_path):
    path = tmp_path / "c.yaml"
    c = read_consortium(None)
    write_consortium(c, path)
    again = read_consortium(path)
    assert [f.record for f in again.facilities] == [f.record for f in c.facilities]
    assert [f.token for f in again.facilities] == [f.token for f in c.facilities]
    f = again.get("township-2")
    lis = dataclasses.replace(f.record, timezone="Asia/Urumqi", hl7_names=("TWP2-LIS",))
    again.put(Facility(lis, f.token))
    write_consortium(again, path)
    assert read_consortium(path).get("township-2").record == lis
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not an IANA time zone"):
        write_consortium(Consortium("x", [Facility(dataclasses.replace(
            lis, timezone="Mars/Olympus"), f.token)]), tmp_path / "x.yaml")
    bad = dataclasses.replace(f.record, reading_centres=(("imaging", "nowhere"),))
    with pytest.raises(ConfigError, match="unknown facility 'nowhere'"):
        again.put(Facility(bad, f.token))
    with pytest.raises(ConfigError, match="own token"):
        again.put(Facility(dataclasses.replace(f.record, id="twin"), f.token))
    with pytest.raises(ConfigError, match="not a base64 Ed25519"):
        write_consortium(Consortium("x", [Facility(FacilityRecord(
            "a", "A", "village-clinic", keys=(SigningKey("a#1", "bm9wZQ==", T0),)),
            "0123456789abcdef")]), tmp_path / "x.yaml")


def test_generated_keys_sign_and_verify():
    key = generate_key()
    from hub.signing import Signer

    signer = Signer("village-4#2", key)
    c = read_consortium(None)
    f = c.get("village-4")
    c.put(Facility(f.record.with_rotated_key(public_key_text(key), T0), f.token))
    assert c.directory().verify(_event(signer)) == "village-4#2"


def test_a_consortium_file_with_text_no_store_can_hold_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    write_consortium(read_consortium(None), path)
    path.write_text(path.read_text("utf-8").replace("name: 第一乡镇卫生院",
                                                    'name: "第一乡镇\\0卫生院"'), "utf-8")
    with pytest.raises(ConfigError, match="no store can hold"):
        read_consortium(path)
