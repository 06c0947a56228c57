"""De-identification for research exports: what goes, what shifts, what stays linked."""

from __future__ import annotations

from datetime import date, datetime

import orjson
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from hub.export.deidentify import MAX_SHIFT_DAYS, deidentify, pseudonym, shift_date, shift_days
from hub.fhir import validate

SECRET = b"test-identity-secret-0123456789"
PATIENT = {
    "resourceType": "Patient", "id": "township-1.p1",
    "meta": {"lastUpdated": "2026-11-01T08:00:00Z", "source": "urn:hie:facility:township-1"},
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">王秀英"
             "</div>"},
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": "110101195803021234"},
                   {"system": "urn:hie:facility:township-1:mrn", "value": "MRN1"}],
    "name": [{"text": "王秀英", "family": "王", "given": ["秀英"]}],
    "telecom": [{"system": "phone", "value": "13800000000"}],
    "address": [{"text": "某县某镇某村 12 号"}],
    "contact": [{"name": {"text": "王建国"}}],
    "extension": [{"url": "urn:x", "valueString": "anything"}],
    "gender": "female", "birthDate": "1958-03-02",
}
OBSERVATION = {
    "resourceType": "Observation", "id": "township-1.o1", "status": "final",
    "identifier": [{"system": "urn:lis", "value": "ACC-7"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0",
                         "display": "Glucose"}], "text": "血糖 (王秀英 复查)"},
    "subject": {"reference": "Patient/township-1.p1", "display": "王秀英"},
    "effectiveDateTime": "2026-11-01T07:30:00+08:00",
    "issued": "2026-11-01T09:00:00.123Z",
    "valueQuantity": {"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                      "code": "mmol/L"},
    "note": [{"text": "patient says she lives alone"}],
    "referenceRange": [{"low": {"value": 3.9}, "text": "3.9-6.1"}],
}
IDENTIFYING = ("110101195803021234", "MRN1", "王秀英", "13800000000", "某县", "王建国",
               "ACC-7", "lives alone", "anything", "township-1.p1", "township-1.o1")


def test_identifiers_names_contacts_and_free_text_are_gone():
    for resource in (PATIENT, OBSERVATION):
        out = deidentify(resource, "township-1.p1", SECRET)
        text = orjson.dumps(out).decode()
        for word in IDENTIFYING:
            assert word not in text, (word, out)
        Model = get_fhir_model_class(out["resourceType"])
        Model.model_validate(out)  # still valid R4B (the profile's identifier rule aside)
    obs = deidentify(OBSERVATION, "township-1.p1", SECRET)
    assert obs["code"]["coding"][0]["display"] == "Glucose"  # codes keep their meaning
    assert obs["valueQuantity"]["value"] == 6.1
    assert obs["meta"]["security"][0]["code"] == "PSEUDED"
    assert validate(obs) == []  # still a valid R4B Observation


def test_one_patients_resources_keep_referring_to_each_other():
    p = deidentify(PATIENT, "township-1.p1", SECRET)
    obs = deidentify(OBSERVATION, "township-1.p1", SECRET)
    assert obs["subject"]["reference"] == f"Patient/{p['id']}"
    assert p["id"] == pseudonym(SECRET, "Patient", "township-1.p1")
    assert pseudonym(b"another-secret-0123456789", "Patient", "township-1.p1") != p["id"]


def test_dates_shift_by_one_offset_per_patient_so_intervals_stay_true():
    days = shift_days(SECRET, "township-1.p1")
    assert days != 0 and -MAX_SHIFT_DAYS <= days <= MAX_SHIFT_DAYS
    p = deidentify(PATIENT, "township-1.p1", SECRET)
    obs = deidentify(OBSERVATION, "township-1.p1", SECRET)
    born = date.fromisoformat(p["birthDate"])
    taken = datetime.fromisoformat(obs["effectiveDateTime"])
    assert (born - date(1958, 3, 2)).days == days
    assert (taken.date() - born).days == (date(2026, 11, 1) - date(1958, 3, 2)).days
    assert obs["effectiveDateTime"].endswith("T07:30:00+08:00")  # the time of day stays
    assert obs["issued"].endswith("T09:00:00.123Z")


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
       st.integers(-MAX_SHIFT_DAYS, MAX_SHIFT_DAYS))
def test_a_shifted_date_is_exactly_days_away_and_partial_dates_stay(day, days):
    shifted = shift_date(day.isoformat(), days)
    assert (date.fromisoformat(shifted) - day).days == days
    stamp = f"{day.isoformat()}T23:59:59.5+08:00"
    assert shift_date(stamp, days) == f"{shifted}T23:59:59.5+08:00"
    assert shift_date(day.isoformat()[:7], days) == day.isoformat()[:7]
    assert shift_date(str(day.year), days) == str(day.year)


@given(st.text(min_size=1, max_size=40))
def test_patients_get_different_offsets_and_each_always_the_same(key):
    assert shift_days(SECRET, key) == shift_days(SECRET, key)
    assert shift_days(SECRET, key) != 0


def test_offsets_are_spread_over_the_window():
    offsets = {shift_days(SECRET, f"township-1.p{i}") for i in range(2000)}
    assert len(offsets) > 300 and min(offsets) < -150 and max(offsets) > 150
