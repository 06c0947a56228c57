"""Control rules of remote monitoring: the window, thresholds at their boundary, arrival
order, critical readings, missing readings, plausibility; the reading -> Observation map."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.fhir import validate
from hub.monitoring import readings as rd
from hub.monitoring.rules import (
    BP,
    CRITICAL,
    GLUCOSE,
    MISSING,
    UNCONTROLLED_BP,
    UNCONTROLLED_GLUCOSE,
    Reading,
    Thresholds,
    escalation_due,
    evaluate,
    implausible,
    missing,
)

TH = Thresholds()
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def bp(i: int, sbp: float, dbp: float = 70) -> Reading:
    return Reading(f"r{i}", BP, (T0 + timedelta(hours=i)).isoformat(), sbp=sbp, dbp=dbp)


def kinds(found) -> set[str]:
    return {f.kind for f in found}


readings_bp = st.lists(st.tuples(st.floats(90, 179), st.floats(50, 109)), min_size=0,
                       max_size=12)


@given(readings_bp, st.randoms(use_true_random=False), st.booleans())
def test_any_arrival_order_gives_the_same_status(values, rnd, diabetic):
    rs = [bp(i, s, d) for i, (s, d) in enumerate(values)]
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert evaluate(rs, diabetic, TH) == evaluate(shuffled, diabetic, TH)


@given(readings_bp, st.booleans())
def test_only_the_last_five_by_measurement_time_count(values, diabetic):
    rs = [bp(i, s, d) for i, (s, d) in enumerate(values)]
    last5 = rs[-5:]
    high = sum(1 for r in last5 if (r.sbp >= (130 if diabetic else 140)
                                    or r.dbp >= (80 if diabetic else 90)))
    found = evaluate(rs, diabetic, TH)
    assert (UNCONTROLLED_BP in kinds(found)) == (high >= 3)
    if high >= 3:
        (f,) = [f for f in found if f.kind == UNCONTROLLED_BP]
        assert set(f.readings) == {r.id for r in last5}


def test_old_high_readings_leave_the_window():
    rs = [bp(i, 150) for i in range(3)] + [bp(3 + i, 120) for i in range(3)]
    assert UNCONTROLLED_BP not in kinds(evaluate(rs, False, TH))
    assert UNCONTROLLED_BP in kinds(evaluate(rs[:5], False, TH))


@pytest.mark.parametrize(("sbp", "dbp", "diabetic", "uncontrolled"), [
    (140, 70, False, True), (139.9, 89.9, False, False), (120, 90, False, True),
    (130, 70, True, True), (129.9, 79.9, True, False), (120, 80, True, True),
    (135, 85, False, False), (135, 85, True, True)])
def test_thresholds_at_the_boundary_stricter_for_diabetics(sbp, dbp, diabetic, uncontrolled):
    rs = [bp(i, sbp, dbp) for i in range(3)]
    assert (UNCONTROLLED_BP in kinds(evaluate(rs, diabetic, TH))) == uncontrolled


@given(st.floats(3.1, 16.6), st.booleans())
def test_fasting_glucose_at_7_0(value, fasting):
    r = Reading("g1", GLUCOSE, T0.isoformat(), glucose=value, fasting=fasting)
    assert (UNCONTROLLED_GLUCOSE in kinds(evaluate([r], False, TH))) == (
        fasting and value >= 7.0)


def test_the_last_fasting_value_decides():
    high = Reading("g1", GLUCOSE, T0.isoformat(), glucose=8.2, fasting=True)
    later = Reading("g2", GLUCOSE, (T0 + timedelta(days=1)).isoformat(), glucose=6.1,
                    fasting=True)
    after_meal = Reading("g3", GLUCOSE, (T0 + timedelta(days=2)).isoformat(), glucose=9.5)
    assert UNCONTROLLED_GLUCOSE not in kinds(evaluate([later, high, after_meal], False, TH))
    assert UNCONTROLLED_GLUCOSE in kinds(evaluate([high, after_meal], False, TH))


@pytest.mark.parametrize(("reading", "is_critical"), [
    (Reading("a", BP, T0.isoformat(), sbp=180, dbp=95), True),
    (Reading("a", BP, T0.isoformat(), sbp=179, dbp=109), False),
    (Reading("a", BP, T0.isoformat(), sbp=150, dbp=110), True),
    (Reading("a", GLUCOSE, T0.isoformat(), glucose=16.7), True),
    (Reading("a", GLUCOSE, T0.isoformat(), glucose=2.9), True),
    (Reading("a", GLUCOSE, T0.isoformat(), glucose=3.0), False)])
def test_critical_readings(reading, is_critical):
    found = evaluate([reading], False, TH)
    assert (CRITICAL in kinds(found)) == is_critical
    if is_critical:
        assert next(f for f in found if f.kind == CRITICAL).readings == ("a",)


def test_only_the_newest_reading_can_be_critical():
    rs = [bp(0, 185, 100), bp(1, 130, 80)]
    assert CRITICAL not in kinds(evaluate(rs, False, TH))


@given(st.floats(0, 10))
def test_missing_readings_after_n_days(days):
    last = T0.isoformat()
    found = missing(last, last, T0 + timedelta(days=days), TH)
    assert (found is not None) == (days >= TH.missing_days)
    if found:
        assert found.kind == MISSING


def test_missing_counts_from_enrolment_without_any_reading():
    enrolled = T0.isoformat()
    assert missing(None, enrolled, T0 + timedelta(days=2), TH) is None
    assert "enrolment" in missing(None, enrolled, T0 + timedelta(days=3), TH).reason


def test_escalation_after_the_sla():
    assert not escalation_due(T0.isoformat(), T0 + timedelta(hours=23.9), 24)
    assert escalation_due(T0.isoformat(), T0 + timedelta(hours=24), 24)


@pytest.mark.parametrize(("values", "refused"), [
    ({"sbp": 400, "dbp": 80}, True), ({"sbp": 120, "dbp": 130}, True),
    ({"sbp": 300, "dbp": 200}, False), ({"sbp": 301, "dbp": 80}, True),
    ({"sbp": 120, "dbp": 80, "pulse": 0}, True),
    ({"glucose": -1}, True), ({"glucose": 45}, True), ({"glucose": 0.5}, False),
    ({"sbp": 50, "dbp": 20}, False), ({"sbp": 120, "dbp": 80, "pulse": None}, False)])
def test_impossible_values(values, refused):
    assert (implausible(values) is not None) == refused


def test_bp_reading_becomes_a_valid_observation_and_back():
    doc = {"time": "2026-03-01T07:30:00+08:00", "systolic": 146, "diastolic": 92,
           "pulse": 71}
    obs = rd.observation(BP, "bp-1", "p-1", doc)
    assert validate(obs, "Observation") == []
    assert obs["id"] == "bp-1-20260228T233000"
    assert obs["device"] == {"reference": "Device/bp-1"}
    codes = [c["code"]["coding"][0]["code"] for c in obs["component"]]
    assert codes == ["8480-6", "8462-4", "8867-4"]
    assert obs["component"][0]["valueQuantity"]["code"] == "mm[Hg]"
    r = rd.reading_of(obs, "f.x")
    assert (r.kind, r.sbp, r.dbp, r.time) == (BP, 146, 92, "2026-02-28T23:30:00+00:00")
    assert rd.event_id("bp-1", obs) == rd.event_id("bp-1", dict(obs))


@pytest.mark.parametrize(("unit", "value", "code", "mmol"), [
    ("mmol/L", 7.4, "15074-8", 7.4), ("mg/dL", 126, "2339-0", 6.994)])
def test_glucose_reading_in_either_unit(unit, value, code, mmol):
    doc = {"time": "2026-03-01T07:05:00", "glucose": value, "unit": unit, "fasting": True}
    obs = rd.observation(GLUCOSE, "glu-1", "p-1", doc)
    assert validate(obs, "Observation") == []
    assert obs["code"]["coding"][0]["code"] == code
    assert obs["valueQuantity"] == {"value": value, "unit": unit,
                                    "system": "http://unitsofmeasure.org", "code": unit}
    r = rd.reading_of(obs, "f.x")
    assert r.fasting and r.glucose == pytest.approx(mmol, abs=1e-3)
    assert rd.values(GLUCOSE, doc)["glucose"] == pytest.approx(mmol, abs=1e-3)


@pytest.mark.parametrize(("doc", "words"), [
    ({"systolic": 120, "diastolic": 80}, "time is required"),
    ({"time": "yesterday", "systolic": 120, "diastolic": 80}, "not RFC 3339"),
    ({"time": "2026-03-01T07:00:00Z", "systolic": 120}, "needs systolic and diastolic"),
    ({"time": "2026-03-01T07:00:00Z", "systolic": "high", "diastolic": 80}, "a number")])
def test_what_is_not_a_reading(doc, words):
    with pytest.raises(rd.BadReading, match=words):
        rd.observation(BP, "bp-1", "p-1", doc)
