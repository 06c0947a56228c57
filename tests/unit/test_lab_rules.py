"""Lab rules: units, flags, status lifecycle, and version order whatever the arrival order."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.apps.feeds import LabChange
from hub.engine.projection import Event
from hub.engine.writer import write
from hub.envelope import new_event
from hub.lab.projection import FEED, RESULTS, LabProjection
from hub.lab.rules import flag_of, lab_result
from hub.lab.units import ANALYTES, normalise
from tests.support.events import envelope
from tests.support.stores import sqlite_with

GLUCOSE = next(a for a in ANALYTES if a.key == "glucose")
CREATININE = next(a for a in ANALYTES if a.key == "creatinine")
LAB = [{"coding": [{"code": "laboratory"}]}]

values = st.floats(min_value=0.01, max_value=5000, allow_nan=False)


@given(values)
def test_glucose_and_creatinine_convert_with_their_molar_masses(v):
    assert abs(normalise(GLUCOSE, v, "mg/dL") - v / 18.0156) < 1e-6 * max(1, v)
    assert abs(normalise(CREATININE, v, "mg/dL") - v * 88.4) < 1e-4 * v * 88.4  # clinical 88.4
    assert normalise(GLUCOSE, v, "mmol/L") == v
    assert normalise(GLUCOSE, v, "furlong/fortnight") is None


@given(values, values, values)
def test_flag_from_the_range_when_the_lab_gave_none(v, a, b):
    low, high = sorted((a, b))
    flag, source = flag_of({}, v, low, high)
    assert source == "reference-range"
    assert flag == ("H" if v > high else "L" if v < low else "N")


def test_the_labs_own_interpretation_wins():
    obs = {"interpretation": [{"coding": [{"code": "HH"}]}]}
    assert flag_of(obs, 5.0, 3.9, 6.1) == ("HH", "interpretation")


@given(st.sampled_from(["registered", "preliminary", "final", "amended", "corrected",
                        "cancelled", "entered-in-error"]))
def test_status_decides_visibility(status):
    r = lab_result({"resourceType": "Observation", "status": status, "category": LAB,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                    "valueQuantity": {"value": 5.0, "code": "mmol/L"}}, "township-1")
    assert r.visible == (status not in ("cancelled", "entered-in-error"))
    assert r.analyte == "glucose" and r.performer == "township-1"


def _version(v: int, status: str) -> Event:
    obs = {"resourceType": "Observation", "id": "o1", "status": status, "category": LAB,
           "meta": {"versionId": str(v), "lastUpdated": f"2026-11-01T08:00:0{v}Z"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-01",
           "valueQuantity": {"value": float(v), "code": "mmol/L"}}
    env = envelope(obs)
    return Event.from_envelope(env, "t", 0, v)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(1, 6)), st.lists(st.integers(1, 3), min_size=1, max_size=5))
def test_newest_version_wins_whatever_the_order_and_batching(order, cuts):
    statuses = {1: "preliminary", 2: "final", 3: "amended", 4: "corrected",
                5: "entered-in-error"}
    events = [_version(v, statuses[v]) for v in order]
    projection = LabProjection()
    store, tables = sqlite_with(projection)
    i = 0
    for cut in [*cuts, len(events)]:
        with store.begin() as conn:
            write(conn, tables, projection.apply(events[i:i + cut]))
        i += cut
    with store.connect() as conn:
        row = conn.execute(sa.select(tables[RESULTS])).mappings().one()
    assert row["status"] == "entered-in-error" and not row["visible"]
    store.dispose()


def test_feed_messages_are_valid_lab_changes():
    """The lab feed is written as a plain dict on the hot path; the apps' model must read it."""
    delete = envelope({"resourceType": "Observation", "id": "o1",
                       "subject": {"reference": "Patient/p1"}}, action="delete")
    events = [_version(1, "final"), _version(2, "entered-in-error"),
              Event.from_envelope(delete, "t", 0, 3)]
    feed = [c.row["payload"] for c in LabProjection().apply(events)
            if getattr(c, "table", None) == FEED]
    messages = [LabChange.model_validate_json(p) for p in feed]
    assert [(m.status, m.visible, m.patient) for m in messages] == [
        ("final", True, "township-1.p1"), ("entered-in-error", False, "township-1.p1"),
        ("deleted", False, "township-1.p1")]
    assert messages[0].value_norm == 1.0 and messages[0].analyte == "glucose"


def test_non_lab_observations_are_not_lab_results():
    vital = new_event("township-1", "Observation", "bp", "township-1.p1",
                      b'{"resourceType":"Observation","id":"bp","status":"final",'
                      b'"category":[{"coding":[{"code":"vital-signs"}]}]}')
    assert LabProjection().apply([Event.from_envelope(vital, "t", 0, 0)]) == []


def test_an_uncategorised_observation_with_a_lab_loinc_code_is_a_lab_result():
    from hub.lab.rules import is_lab_observation

    glucose = {"code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}}
    assert is_lab_observation(glucose)
    assert not is_lab_observation({**glucose, "category": [{"coding": [{"code": "survey"}]}]})
    assert not is_lab_observation({"code": {"coding": [{"system": "http://loinc.org",
                                                        "code": "8867-4"}]}})  # heart rate
