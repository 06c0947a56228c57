import pytest

from hub.fhir import operation_outcome, patient_key, validate
from tests.support.resources import observation, patient


def locations(issues):
    return {i.location for i in issues}


def test_valid_resources_have_no_issues():
    assert validate(observation()) == []
    assert validate(patient()) == []


def test_every_problem_is_named_with_its_path():
    bad = {"resourceType": "Observation", "code": {"coding": [{"system": 5}]}, "bogus": 1}
    issues = validate(bad)
    assert {"Observation.code.coding[0].system", "Observation.bogus", "Observation.status",
            "Observation.subject", "Observation.effective[x]"} <= locations(issues)
    # each element is reported once, even where base FHIR and the profile both object
    assert len([i for i in issues if i.location == "Observation.status"]) == 1


@pytest.mark.parametrize("resource, where, words", [
    ([], "(body)", "JSON object"),
    ({"id": "x"}, "resourceType", "missing"),
    ({"resourceType": "Nonsense"}, "resourceType", "not a resource type"),
    ({"resourceType": "Bundle", "type": "batch"}, "resourceType", "not a resource type"),
    ({**observation(), "status": "done"}, "Observation.status", "unknown Observation status"),
    ({"resourceType": "ImagingStudy", "status": "available",
      "subject": {"reference": "Patient/p"}}, "ImagingStudy.identifier", "DICOM"),
    ({"resourceType": "DiagnosticReport", "status": "final",
      "code": {"text": "CBC"}}, "DiagnosticReport.subject", "required"),
    ({"resourceType": "Patient", "id": "p"}, "Patient.identifier", "required"),
])
def test_rejections(resource, where, words):
    issues = validate(resource)
    assert any(i.location == where and words in i.diagnostics for i in issues), issues


def test_wrong_type_for_the_url():
    issues = validate(patient(), expected_type="Observation")
    assert issues[0].location == "resourceType"
    assert "URL names Observation" in issues[0].diagnostics


def test_operation_outcome_lists_every_issue():
    issues = validate({"resourceType": "Observation"})
    oo = operation_outcome(issues)
    assert oo["resourceType"] == "OperationOutcome"
    assert len(oo["issue"]) == len(issues) >= 3
    assert all(i["severity"] == "error" and i["expression"] for i in oo["issue"])


def test_patient_key_follows_subject():
    assert patient_key("township-1", patient("p9")) == "township-1.p9"
    assert patient_key("township-1", observation(pid="p7")) == "township-1.p7"
    assert patient_key("city-1", {"resourceType": "Organization", "id": "o"}) == "city-1"
    full = {**observation(), "subject": {"reference": "https://h.example/fhir/Patient/p3"}}
    assert patient_key("city-1", full) == "city-1.p3"


def test_patient_key_of_a_task_and_of_a_hub_id():
    # A receiving hospital names the referred patient by hub id: the step shares the key of
    # the sender's events about that patient, so both travel in one partition.
    task = {"resourceType": "Task", "id": "t", "status": "accepted", "intent": "order",
            "for": {"reference": "Patient/township-1.p7"}}
    members = {"township-1", "county-1"}
    assert patient_key("county-1", task, members) == "township-1.p7"
    assert patient_key("township-1", {**task, "for": {"reference": "Patient/p7"}}) == \
        "township-1.p7"
    assert patient_key("township-1", task) == "township-1.p7"  # its own, by hub id
    assert patient_key("county-1", observation(pid="township-1.p7"), members) == \
        "township-1.p7"
    # A local id with dots (a DICOM Patient ID) is not a hub id: only members are prefixes.
    assert patient_key("county-1", observation(pid="1.2.840.7"), members) == \
        "county-1.1.2.840.7"
    assert patient_key("county-1", task) == "county-1.township-1.p7"  # members unknown


def test_a_contained_that_is_not_a_list_is_refused_not_crashed():
    # A local reference makes the invariant check look for the contained resources; found
    # by a property test, it used to raise TypeError (an HTTP 500) instead of an issue.
    bad = {**observation(), "subject": {"reference": "#p1"}, "contained": 1}
    issues = validate(bad)
    assert "Observation.contained" in locations(issues)
    assert any(i.diagnostics.startswith("ref-1") for i in issues)
