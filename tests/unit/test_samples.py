"""The public real-world samples in ``samples/`` go through the adapters as they are.

Every HL7 v2 file is mapped with ``adapters.hl7v2.mapping`` and every resource is checked
with the same validation the intake applies before publishing; every DICOM file is scanned
with ``adapters.dicom.scan``. ``samples/SOURCES.md`` must name every file with its SHA-256,
so no sample arrives without its origin and licence.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from adapters.dicom.scan import imaging_study, scan_folder, study_id
from adapters.hl7v2.codec import decode, split_file
from adapters.hl7v2.mapping import Hl7Refused, map_message
from hub.fhir import validate

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HL7 = SAMPLES / "hl7v2"
DICOM = SAMPLES / "dicom"
FACILITY = "township-1"
LOINC = "http://loinc.org"


def as_sent_by(raw: bytes, facility: str = FACILITY) -> str:
    """The message as an LIS configured for the hub sends it: MSH-4 names the facility.
    (The README's ``sed`` line does the same to the files.)"""
    text, _ = decode(raw)
    return re.sub(r"^(MSH\|[^|]*\|[^|]*\|)[^|\r\n]*", rf"\g<1>{facility}", text, count=1)


def mapped(name: str) -> dict[str, dict]:
    """Resources of one sample file (one message per file), by id, each valid."""
    (raw,) = split_file((HL7 / name).read_bytes())
    resources = map_message(as_sent_by(raw), FACILITY).resources
    ids = Counter(f"{r['resourceType']}/{r['id']}" for r in resources)
    assert [k for k, n in ids.items() if n > 1] == [], "two resources share an id"
    for res in resources:
        assert validate(res, res["resourceType"]) == [], res
    return {r["id"]: r for r in resources}


def loinc(res: dict) -> str:
    return next(c["code"] for c in res["code"]["coding"] if c.get("system") == LOINC)


def observations(res: dict[str, dict]) -> list[dict]:
    return [r for r in res.values() if r["resourceType"] == "Observation"]


def test_sources_name_every_sample_with_its_hash():
    listed = dict((path, digest) for digest, path in re.findall(
        r"^([0-9a-f]{64})  (\S+)$", (SAMPLES / "SOURCES.md").read_text(), re.M))
    files = sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*")
                   if p.is_file() and p.name != "SOURCES.md")
    assert sorted(listed) == files
    for path in files:
        data = (SAMPLES / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == listed[path], f"{path} changed"
        assert len(data) < 200_000, path


@pytest.mark.parametrize("name", sorted(p.name for p in HL7.glob("*.hl7")))
def test_the_listener_refuses_a_sample_naming_another_sending_facility(name):
    """As published, MSH-4 names the original sender: AR, with the reason (see README)."""
    (raw,) = split_file((HL7 / name).read_bytes())
    text, _ = decode(raw)
    with pytest.raises(Hl7Refused) as refused:
        map_message(text, FACILITY)
    assert refused.value.code == "AR" and "MSH-4 sending facility" in refused.value.reason


def of_type(res: dict[str, dict], rtype: str) -> list[dict]:
    return [r for r in res.values() if r["resourceType"] == rtype]


def test_nist_lead_result_final_then_corrected():
    first, corrected = mapped("nist-elr-1-lead-final.hl7"), mapped(
        "nist-elr-3-lead-corrected.hl7")
    # same order, same ids: the correction replaces the first result, nothing is added
    assert set(first) == set(corrected)
    (obs,) = observations(first)
    assert (loinc(obs), obs["status"]) == ("10368-9", "final")
    assert obs["id"].startswith("9700123-1-")
    assert obs["subject"]["reference"] == "Patient/9817566735"
    assert obs["valueQuantity"] == {"value": 50.0, "unit": "ug/dL",
                                    "system": "http://unitsofmeasure.org", "code": "ug/dL"}
    assert obs["interpretation"][0]["coding"][0]["code"] == "H"
    assert obs["effectiveDateTime"] == "2008-08-15T10:30:00-07:00"  # offset kept
    # the bound is read, the words after it are kept, and the range's own unit wins
    assert obs["referenceRange"] == [{
        "high": {"value": 9.0, "unit": "mcg/dL"},
        "text": "<9 mcg/dL:  Acceptable background lead exposure"}]
    (report,) = of_type(first, "DiagnosticReport")
    assert report["status"] == "final" and report["result"] == [
        {"reference": f"Observation/{obs['id']}"}]
    assert report["issued"] == "2008-08-18T18:00:00-07:00"
    assert report["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.19.3.1.6"
    (specimen,) = of_type(first, "Specimen")
    assert specimen["type"]["coding"] == [
        {"code": "122554006", "system": "http://snomed.info/sct",
         "display": "Capillary blood specimen"},
        {"code": "BLDC", "system": "http://terminology.hl7.org/CodeSystem/v2-0070",
         "display": "Blood capillary"}]
    # the facility answers for the result; OBX-23 names the lab that performed it
    facility, lab = of_type(first, "Organization")
    assert obs["performer"] == [{"reference": f"Organization/{FACILITY}"},
                                {"reference": f"Organization/{lab['id']}"}]
    assert facility["id"] == FACILITY
    assert (lab["name"], lab["identifier"][0]["value"]) == ("Lab", "1236")
    assert lab["address"][0]["line"] == ["3434 Industrial Lane"]
    (patient,) = of_type(first, "Patient")
    assert patient["name"][0]["text"] == "Philip Johnson"
    assert patient["address"][0] == {
        "use": "home", "text": "3345 Elm Street, Aurora, Colorado 80011, USA",
        "line": ["3345 Elm Street"], "city": "Aurora", "state": "Colorado",
        "postalCode": "80011", "country": "USA"}
    (fixed,) = observations(corrected)
    assert fixed["id"] == obs["id"]
    assert (fixed["status"], fixed["valueQuantity"]["value"]) == ("corrected", 25.0)
    assert fixed["referenceRange"] == [{"high": {
        "value": 10.0, "unit": "ug/dl", "system": "http://unitsofmeasure.org",
        "code": "ug/dl"}}]  # "<10 ug/dl": the same unit as OBX-6, so UCUM as OBX-6 says
    # the correction is later, so it supersedes the first version whatever the arrival order
    assert fixed["meta"]["lastUpdated"] > obs["meta"]["lastUpdated"]


def test_nist_stool_culture_keeps_all_three_results_sharing_one_set_id():
    """Every OBX of this message has set id 1: each result still gets its own id."""
    res = mapped("nist-elr-6-stool-culture.hl7")
    obs = observations(res)
    assert len({o["id"] for o in obs}) == 3
    (report,) = of_type(res, "DiagnosticReport")
    assert report["result"] == [{"reference": f"Observation/{o['id']}"} for o in obs]


def test_cdc_newborn_admission_becomes_a_patient():
    (patient,) = mapped("cdc-adt-a01-newborn-admission.hl7").values()
    assert patient["resourceType"] == "Patient" and patient["id"] == "11102779"
    assert patient["identifier"] == [{"system": f"urn:hie:facility:{FACILITY}:mrn",
                                      "value": "11102779"}]
    assert patient["name"] == [{"text": "BB SARAH SMITH", "family": "SMITH",
                                "given": ["BB SARAH"]}]
    assert (patient["gender"], patient["birthDate"]) == ("male", "2023-05-04")
    assert patient["address"] == [{
        "text": "555 STATE HIGHWAY 13, DEER CREEK, MN 56527-9657, US",
        "line": ["555 STATE HIGHWAY 13"], "city": "DEER CREEK", "state": "MN",
        "postalCode": "56527-9657", "country": "US"}]


def test_python_hl7_admission_keeps_latin_names_apart():
    (patient,) = mapped("python-hl7-adt-a01-bronx.hl7").values()
    assert patient["id"] == "2148790"
    assert patient["name"] == [{"text": "MELLODIAL RUFUSS", "family": "RUFUSS",
                                "given": ["MELLODIAL"]}]
    assert patient["address"][0]["text"] == "221 CANVIEW AVENUE, 66-D, BRONX, NY 10454, USA"
    assert patient["address"][0]["line"] == ["221 CANVIEW AVENUE", "66-D"]
    assert patient["telecom"][:2] == [
        {"system": "phone", "value": "3472444150", "use": "home"},
        {"system": "phone", "value": "(000)000-0000", "use": "home"}]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1952-11-29")


def test_cdc_reference_lab_urine_panel_keeps_local_and_loinc_codes_and_notes():
    res = mapped("cdc-oru-r01-urine-albumin-creatinine.hl7")
    obs = observations(res)
    assert obs[0]["code"]["coding"] == [
        {"code": "20260", "system": "urn:hie:hl7v2:AEL", "display": "Albumin Urine"},
        {"code": "14957-5", "system": "http://loinc.org", "display": "Albumin Urine"}]
    assert obs[2]["note"][0]["text"].splitlines()[:3] == [
        "UNLESS OTHERWISE INDICATED, ALL TESTING PERFORMED AT:", "",
        "AMERICAN ESOTERIC LABORATORIES-MEMPHIS"]
    assert {o["subject"]["reference"] for o in obs} == {"Patient/557204"}
    # "mg/g crea" is no UCUM code (a space): kept as the unit's text only
    assert obs[2]["valueQuantity"] == {"value": 36.0, "unit": "mg/g crea"}
    assert obs[2]["referenceRange"] == [{"high": {"value": 30.0, "unit": "mg/g crea"}}]
    assert obs[1]["valueQuantity"]["code"] == "mg/dL"
    (report,) = of_type(res, "DiagnosticReport")
    assert report["code"]["text"] == "ALBUMIN/CREAT RATIO"
    assert report["identifier"][0]["value"] == "335707581"


def test_cdc_newborn_screening_report_keeps_every_panel_and_result():
    res = mapped("cdc-oru-r01-newborn-screening.hl7")
    reports = of_type(res, "DiagnosticReport")
    assert len(reports) == 13 and len(observations(res)) == 33
    assert [len(r["result"]) for r in reports] == [7, 8, 3, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2]
    assert reports[0]["extension"][0]["valueAnnotation"]["text"].startswith(
        "The newborn screen identifies newborns at increased risk")
    (specimen,) = of_type(res, "Specimen")
    assert specimen["collection"]["collectedDateTime"] == "2019-07-20T08:35:00+08:00"
    assert specimen["receivedTime"] == "2019-07-21T00:00:00+08:00"
    assert reports[0]["specimen"] == [{"reference": f"Specimen/{specimen['id']}"}]


# Every ORU sample's results, OBX by OBX, read off the messages: (code, value, unit,
# reference range (low, high, unit) or its text, flag, specimen); then the status and
# effective time every result of the message has. Text values: their first 30 characters.
EXPECTED = {
    'cdc-oru-r01-newborn-screening.hl7': (['final'], ['2019-07-20T08:35:00+08:00'], [
        ('57718-9', 'LA12432-3', None, None, None, 'Blood spot specimen'),
        ('57130-7', 'LA18944-1', None, None, 'A', 'Blood spot specimen'),
        ('57131-5', 'LA21161-7', None, None, None, 'Blood spot specimen'),
        ('57131-5', 'LA12566-8', None, None, None, 'Blood spot specimen'),
        ('57131-5', 'LA25796-6', None, None, None, 'Blood spot specimen'),
        ('57720-5', 'LA22202-8', None, None, None, 'Blood spot specimen'),
        ('57724-7', 'SUMMARY: Abnormal\nSample Quali', None, None, 'A', 'Blood spot specimen'),
        ('57723-9', '190123456', None, None, None, None),
        ('8339-4', '2805.0', 'g', None, None, None),
        ('57713-0', 'LA12419-0', None, None, None, None),
        ('57713-0', 'LA12420-8', None, None, None, None),
        ('67704-7', 'LA16914-6', None, None, None, None),
        ('67704-7', 'LA16915-3', None, None, None, None),
        ('62324-9', 'Healthy,Bob', None, None, None, None),
        ('62328-0', '555 5551212', None, None, None, None),
        ('46733-2', 'LA18593-6', None, None, 'A', None),
        ('57793-2', 'LA21161-7', None, None, None, None),
        ('57710-6', 'Possible Amino Acid Disorder. ', None, None, None, None),
        ('46736-5', 'LA18592-8', None, None, 'N', None),
        ('57792-4', 'LA137-2', None, None, None, None),
        ('46744-9', 'LA18592-8', None, None, 'N', None),
        ('57791-6', 'LA137-2', None, None, None, None),
        ('46769-6', 'LA9663-1', None, None, 'A', None),
        ('57707-2', 'No further evaluation necessar', None, None, None, None),
        ('46758-9', 'LA18592-8', None, None, 'N', None),
        ('46762-1', 'LA18592-8', None, None, 'N', None),
        ('46737-3', 'LA18592-8', None, None, 'N', None),
        ('46740-7', 'LA18592-8', None, None, 'N', None),
        ('46761-3', 'LA18592-8', None, None, 'N', None),
        ('62321-5', 'LA18593-6', None, None, 'A', None),
        ('62322-3', 'Possible Severe Combined Immun', None, None, None, None),
        ('85269-9', 'LA18593-6', None, None, 'A', None),
        ('85268-1', 'Possible X-ALD. C26:0 LPC Elev', None, None, None, None),
    ]),
    'cdc-oru-r01-urine-albumin-creatinine.hl7': (['final'], ['2023-03-17T17:04:00+08:00'], [
        ('14957-5', '2.1', 'mg/dL', None, None, None),
        ('2161-8', '59.0', 'mg/dL', (28.0, 217.0, 'mg/dL'), None, None),
        ('14959-1', '36.0', 'mg/g crea', (None, 30.0, 'mg/g crea'), 'H', None),
    ]),
    'python-hl7-oru-r01-glucose.hl7': (['final'], ['2002-02-15T07:30:00+08:00'], [
        ('1554-5', '182.0', 'mg/dl', (70.0, 105.0, 'mg/dl'), 'H', 'PRIMARY'),
        ('1553-5', '182', None, (70.0, 105.0, 'mg/dl'), 'H', 'PRIMARY'),
    ]),
    'nist-elr-1-lead-final.hl7': (['final'], ['2008-08-15T10:30:00-07:00'], [
        ('10368-9', '50.0', 'ug/dL', (None, 9.0, 'mcg/dL'), 'H', 'Capillary blood specimen'),
    ]),
    'nist-elr-3-lead-corrected.hl7': (['corrected'], ['2008-08-15T10:30:00-07:00'], [
        ('10368-9', '25.0', 'ug/dl', (None, 10.0, 'ug/dl'), 'H', 'Capillary blood specimen'),
    ]),
    'nist-elr-4-anthrax-isolated.hl7': (['final'], ['2008-08-02T15:00:00+08:00'], [
        ('11469-4', 'Isolated', None, None, None, 'Venous blood specimen'),
    ]),
    'nist-elr-5-hepatitis-c-rna.hl7': (['final'], ['2010-07-28T14:00:00+08:00'], [
        ('10676-5', '850000.0', 'iU/mL',
         'High Viral Load > or = 850000i', 'H', 'Venous blood specimen'),
    ]),
    'nist-elr-6-stool-culture.hl7': (['final'], ['2010-07-26T11:00:00+08:00'], [
        ('6331-3', 'Isolated', None, None, None, 'Stool specimen'),
        ('20995-1', 'Isolated', None, None, None, 'Stool specimen'),
        ('17576-0', 'Not Isolated', None, None, None, 'Stool specimen'),
    ]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_oru_result_field_by_field(name):
    statuses, times, rows = EXPECTED[name]
    obs = observations(mapped(name))
    assert sorted({o["status"] for o in obs}) == statuses
    assert sorted({o["effectiveDateTime"] for o in obs}) == times
    assert [result_row(o) for o in obs] == rows


def result_row(o: dict) -> tuple:
    codings = o["code"]["coding"]
    code = next((c["code"] for c in codings if c.get("system") == LOINC), codings[0]["code"])
    unit = None
    if "valueQuantity" in o:
        q = o["valueQuantity"]
        value, unit = q.get("comparator", "") + repr(q["value"]), q.get("unit")
    elif "valueCodeableConcept" in o:
        value = o["valueCodeableConcept"]["coding"][0]["code"]
    else:
        value = o["valueString"][:30]
    rr = (o.get("referenceRange") or [None])[0]
    if rr is None or not ({"low", "high"} & set(rr)):
        span = rr and rr["text"][:30]
    else:
        span = (rr.get("low", {}).get("value"), rr.get("high", {}).get("value"),
                (rr.get("low") or rr.get("high"))["unit"])
    flag = ",".join(i["coding"][0]["code"] for i in o.get("interpretation", [])) or None
    return (code, value, unit, span, flag, (o.get("specimen") or {}).get("display"))


def test_the_dicom_samples_become_three_valid_studies():
    scan = scan_folder(DICOM)
    assert scan.problems == []
    studies = {s.patient_id: s for s in scan.studies.values()}
    assert set(studies) == {"1CT1", "4MR1", "98890234"}
    resources = {pid: imaging_study(s) for pid, s in studies.items()}
    for res in resources.values():
        assert validate(res, "ImagingStudy") == []

    ct = resources["1CT1"]
    assert ct["identifier"][0] == {
        "system": "urn:dicom:uid", "value": "urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"}
    assert ct["modality"][0]["code"] == "CT" and ct["numberOfInstances"] == 1
    assert ct["started"].startswith("2004-01-19T07:27:30")
    assert resources["4MR1"]["modality"][0]["code"] == "MR"

    brain = resources["98890234"]
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.133"
    assert brain["id"] == study_id(uid) and brain["description"] == "Brain"
    assert (brain["numberOfSeries"], brain["numberOfInstances"]) == (2, 4)
    assert [(s["number"], s["description"], s["numberOfInstances"])
            for s in brain["series"]] == [(1, "FAST LOCALIZER", 1),
                                          (2, "T/S/C RF FAST PILOT", 3)]
    assert brain["identifier"][1]["value"] == "134"  # accession number
    assert brain["subject"]["reference"] == "Patient/98890234"
