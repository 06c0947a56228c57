import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from hypothesis import given
from hypothesis import strategies as st

from hub.access.rules import (
    ALL,
    AuditRecord,
    Principal,
    audit_event,
    may_read_patient,
    may_read_projection,
    patient_facility,
)
from hub.errors import ConfigError
from hub.registry.consortium_file import load_directory

facility_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,12}", fullmatch=True)


@given(st.frozensets(facility_ids, max_size=4), facility_ids,
       st.from_regex(r"[A-Za-z0-9\-]{1,10}", fullmatch=True))
def test_apps_read_only_their_facilities_patients(allowed, facility, local):
    app = Principal("app", "a", allowed, frozenset({"shared_record"}))
    key = f"{facility}.{local}"
    assert patient_facility(key) == facility
    assert may_read_patient(app, key) == (facility in allowed)
    everyone = Principal("facility", "f", frozenset({ALL}), frozenset({ALL}))
    assert may_read_patient(everyone, key)
    assert may_read_projection(everyone, "anything")
    assert may_read_projection(app, "shared_record") and not may_read_projection(app, "audit")


@pytest.mark.parametrize("interaction, what", [
    ("read", "Observation/township-1.o1"), ("search-type", "Observation?patient=x.p")])
def test_audit_events_are_valid_fhir(interaction, what):
    r = AuditRecord("a-1", "2026-11-23T08:00:00.000000Z", "app", "dash", interaction, what,
                    "township-1.p1", "0")
    event = audit_event(r)
    AuditEvent.model_validate(event)
    assert event["entity"][0]["what"]["reference"] == "Patient/township-1.p1"


def test_apps_must_name_known_facilities(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "facilities:\n  - {id: a, name: A, tier: village-clinic, token: 0123456789abcdef}\n"
        "apps:\n  - {id: x, name: X, token: 0123456789abcdefg, projections: ['*'],"
        " facilities: [nowhere]}\n")
    with pytest.raises(ConfigError, match="unknown facilities"):
        load_directory(bad)
