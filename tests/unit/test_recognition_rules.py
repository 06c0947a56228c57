"""Mutual recognition rules: validity (inclusive, Asia/Shanghai days), EQA on the result
date, tier, status, negative list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.recognition.catalogue import load_catalogue
from hub.recognition.rules import CONSORTIUM_TZ, PriorResult, check, consortium_day
from hub.registry.model import FacilityRecord, Qualification

CAT = load_catalogue()
LAB = FacilityRecord("lab-a", "A", "county-hospital", eqa=(
    Qualification("lab", date(2026, 1, 1), date(2026, 6, 30)),))
CLINIC = FacilityRecord("clinic", "C", "village-clinic", eqa=(
    Qualification("imaging", date(2020, 1, 1), date(2030, 1, 1)),))
REGISTRY = {"lab-a": LAB, "clinic": CLINIC}
instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 6, 30),
                        timezones=st.just(UTC))


def glucose(at: datetime, status: str = "final", facility: str = "lab-a") -> PriorResult:
    return PriorResult("lab-a.o1", "lab", facility, at.isoformat().replace("+00:00", "Z"),
                       status, loinc="15074-8", value="5.6 mmol/L")


def catalogue_item_is_recognisable(result: PriorResult, item: str, day: date) -> bool:
    (v,) = check(CAT, [item], [result], REGISTRY, day)
    return bool(v.recognisable)


@given(instants, st.integers(-3, 12))
def test_validity_is_inclusive_in_consortium_days(at, offset):
    day = consortium_day(at.isoformat())
    assert day == at.astimezone(CONSORTIUM_TZ).date()
    ordered = day + timedelta(days=offset)
    expected = 0 <= offset <= CAT.items["GLU"].validity_days  # 7 days, end day included
    if ordered > date(2026, 6, 30) + timedelta(days=7):
        return
    assert catalogue_item_is_recognisable(glucose(at), "GLU", ordered) == expected


def test_a_result_just_after_midnight_in_shanghai_counts_on_the_shanghai_day():
    at = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)  # 2026-03-02 00:30 in Shanghai
    assert catalogue_item_is_recognisable(glucose(at), "GLU", date(2026, 3, 9))
    assert not catalogue_item_is_recognisable(glucose(at), "GLU", date(2026, 3, 10))


@given(st.dates(min_value=date(2025, 10, 1), max_value=date(2026, 9, 30)))
def test_eqa_must_hold_on_the_result_date(day):
    at = datetime(day.year, day.month, day.day, 9, tzinfo=CONSORTIUM_TZ)
    (v,) = check(CAT, ["GLU"], [glucose(at)], REGISTRY, day)
    in_window = date(2026, 1, 1) <= day <= date(2026, 6, 30)
    assert bool(v.recognisable) == in_window
    if not in_window:
        assert "EQA" in v.reason


@given(st.sampled_from(["amended", "corrected", "entered-in-error", "preliminary",
                        "cancelled"]))
def test_only_final_results_qualify(status):
    (v,) = check(CAT, ["GLU"], [glucose(datetime(2026, 3, 1, tzinfo=UTC), status)],
                 REGISTRY, date(2026, 3, 2))
    assert not v.recognisable and v.not_recognisable[0]["status"] == status


def test_tier_negative_list_unknown_and_marks():
    study = PriorResult("clinic.s1", "imaging", "clinic", "2026-03-01T01:00:00Z", "final",
                        modality=("US",), site_text="abdomen")
    (v,) = check(CAT, ["US-ABD"], [study], REGISTRY, date(2026, 3, 5))
    assert "township-centre or above" in v.reason
    (neg, unknown) = check(CAT, ["ABG", "XYZ"], [], REGISTRY, date(2026, 3, 5))
    assert neg.reason.startswith("on the negative list") and "catalogue" in unknown.reason
    (ok,) = check(CAT, ["GLU"], [glucose(datetime(2026, 3, 1, tzinfo=UTC))], REGISTRY,
                  date(2026, 3, 2))
    assert ok.mark == "HR" and ok.recognisable[0]["saves_yuan"] == 4.0
    (none,) = check(CAT, ["HBA1C"], [], REGISTRY, date(2026, 3, 2))
    assert none.reason == "no prior result for this item"


def test_the_example_catalogue_has_at_least_30_items_in_every_category():
    assert len(CAT.items) >= 30
    assert {i.category for i in CAT.items.values()} >= {"lab", "imaging", "ecg"}
    assert CAT.negative and CAT.mark == "HR"


@given(st.sampled_from(["condition-changed", "emergency", "no-longer-reflects",
                        "patient-request", "quality-doubt", "other", "not-in-catalogue"]),
       st.text(max_size=20))
def test_decisions_round_trip_and_a_retest_needs_a_reason(reason, text):
    import pytest

    from hub.fhir import validate
    from hub.recognition.decisions import Decision, DecisionError, decision_task, read_decision

    with pytest.raises(DecisionError, match="needs a reason"):
        decision_task(Decision("t.p1", "GLU", "retested"), 4.0, "2026-11-23T08:00:00Z")
    d = Decision("t.p1", "GLU", "retested", reason=reason, text=text or None)
    if reason == "other" and not text.strip():
        with pytest.raises(DecisionError, match="needs a text"):
            decision_task(d, 4.0, "2026-11-23T08:00:00Z")
        return
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        with pytest.raises(DecisionError, match="no store can hold"):
            decision_task(d, 4.0, "2026-11-23T08:00:00Z")
        return
    task = decision_task(d, 4.0, "2026-11-23T08:00:00Z")
    assert validate(task, "Task") == []
    assert read_decision(task) == ("retested", "GLU", 4.0, reason)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["preliminary", "final", "amended", "corrected",
                                 "entered-in-error"]), min_size=1, max_size=5), st.randoms())
def test_a_check_follows_the_results_newest_status_whatever_the_arrival_order(statuses, rnd):
    """Versions of one result arrive in any order; the check judges the newest version."""
    import sqlalchemy as sa

    from hub.engine.projection import Event
    from hub.engine.writer import write
    from hub.lab.projection import LabProjection
    from hub.recognition.service import run_check
    from tests.support.events import envelope
    from tests.support.stores import sqlite_with

    versions = []
    for v, status in enumerate(statuses, 1):
        obs = {"resourceType": "Observation", "id": "g1", "status": status,
               "category": [{"coding": [{"code": "laboratory"}]}],
               "meta": {"versionId": str(v), "lastUpdated": f"2026-03-01T08:00:0{v}Z"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
               "subject": {"reference": "Patient/p1"},
               "effectiveDateTime": "2026-03-01T08:00:00+08:00",
               "valueQuantity": {"value": 5.0 + v, "code": "mmol/L"}}
        versions.append(Event.from_envelope(envelope(obs, "lab-a"), "t", 0, v))
    rnd.shuffle(versions)
    projection = LabProjection()
    store, tables = sqlite_with(projection)
    with store.begin() as conn:
        write(conn, tables, projection.apply(versions))
    from hub.mpi.projection import MpiProjection

    with store.begin() as conn:
        for t in MpiProjection().tables(sa.MetaData()).values():
            t.create(conn)
    _, (verdict,) = run_check(store, REGISTRY, CAT, "lab-a.p1", ["GLU"], date(2026, 3, 2))
    assert bool(verdict.recognisable) == (statuses[-1] == "final")
    store.dispose()
