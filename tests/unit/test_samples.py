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


def test_nist_lead_result_final_then_corrected():
    first, corrected = mapped("nist-elr-1-lead-final.hl7"), mapped(
        "nist-elr-3-lead-corrected.hl7")
    assert set(first) == set(corrected) == {"9700123", "9700123-1"}  # same order, same ids
    obs = first["9700123-1"]
    assert (loinc(obs), obs["status"]) == ("10368-9", "final")
    assert obs["subject"]["reference"] == "Patient/9817566735"
    assert obs["valueQuantity"] == {"value": 50.0, "unit": "ug/dL",
                                    "system": "http://unitsofmeasure.org", "code": "ug/dL"}
    assert obs["interpretation"][0]["coding"][0]["code"] == "H"
    assert obs["effectiveDateTime"] == "2008-08-15T10:30:00-07:00"  # offset kept
    assert obs["referenceRange"] == [{"text": "<9 mcg/dL:  Acceptable background lead "
                                              "exposure"}]
    report = first["9700123"]
    assert report["status"] == "final" and report["result"] == [
        {"reference": "Observation/9700123-1"}]
    assert report["issued"] == "2008-08-18T18:00:00-07:00"
    fixed = corrected["9700123-1"]
    assert (fixed["status"], fixed["valueQuantity"]["value"]) == ("corrected", 25.0)
    # the correction is later, so it supersedes the first version whatever the arrival order
    assert fixed["meta"]["lastUpdated"] > obs["meta"]["lastUpdated"]


def test_nist_string_and_high_viral_load_results():
    anthrax = observations(mapped("nist-elr-4-anthrax-isolated.hl7"))
    assert [(loinc(o), o["valueString"]) for o in anthrax] == [("11469-4", "Isolated")]
    assert anthrax[0]["subject"]["reference"] == "Patient/5667351009"
    (hcv,) = observations(mapped("nist-elr-5-hepatitis-c-rna.hl7"))
    assert loinc(hcv) == "10676-5" and hcv["valueQuantity"]["value"] == 850000.0
    assert hcv["valueQuantity"]["unit"] == "iU/mL"
    assert hcv["interpretation"][0]["coding"][0]["code"] == "H"


def test_nist_stool_culture_keeps_all_three_results_sharing_one_set_id():
    """Every OBX of this message has set id 1: each result still gets its own id."""
    res = mapped("nist-elr-6-stool-culture.hl7")
    obs = observations(res)
    assert [(loinc(o), o["valueString"]) for o in obs] == [
        ("6331-3", "Isolated"), ("20995-1", "Isolated"), ("17576-0", "Not Isolated")]
    assert res["2233817"]["result"] == [{"reference": f"Observation/{o['id']}"} for o in obs]
    assert obs[0]["id"] == "2233817-1"  # the first keeps the id it always had


def test_cdc_newborn_admission_becomes_a_patient():
    (patient,) = mapped("cdc-adt-a01-newborn-admission.hl7").values()
    assert patient["resourceType"] == "Patient" and patient["id"] == "11102779"
    assert patient["identifier"] == [{"system": f"urn:hie:facility:{FACILITY}:mrn",
                                      "value": "11102779"}]
    assert patient["name"][0]["family"] == "SMITH"
    assert (patient["gender"], patient["birthDate"]) == ("male", "2023-05-04")
    assert patient["address"][0]["city"] == "DEER CREEK"


def test_cdc_reference_lab_urine_panel():
    res = mapped("cdc-oru-r01-urine-albumin-creatinine.hl7")
    obs = observations(res)
    assert len(obs) == 3  # one Observation per OBX
    assert [(o["code"]["text"], o["valueQuantity"]["value"], o["valueQuantity"]["unit"])
            for o in obs] == [("Albumin Urine", 2.1, "mg/dL"),
                              ("Creatinine-Random Urine", 59.0, "mg/dL"),
                              ("Albumin/Creat Ratio", 36.0, "mg/g crea")]
    assert obs[1]["referenceRange"][0]["low"]["value"] == 28.0
    assert obs[2]["referenceRange"][0] == {"high": {
        "value": 30.0, "unit": "mg/g crea", "system": "http://unitsofmeasure.org",
        "code": "mg/g crea"}}
    assert obs[2]["interpretation"][0]["coding"][0]["code"] == "H"
    assert {o["subject"]["reference"] for o in obs} == {"Patient/557204"}
    assert res["335707581"]["code"]["text"] == "ALBUMIN/CREAT RATIO"


@pytest.mark.xfail(strict=True, reason="HL7 fidelity, not fixed here: OBX value type XTN is "
                   "refused (AE, the whole report with it), and the 13 OBR panels share one "
                   "filler order number (OBR-3), so they would map to one DiagnosticReport id")
def test_cdc_newborn_screening_report_keeps_every_panel_and_result():
    res = mapped("cdc-oru-r01-newborn-screening.hl7")
    assert len([r for r in res.values() if r["resourceType"] == "DiagnosticReport"]) == 13
    assert len(observations(res)) == 33


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
