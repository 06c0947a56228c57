"""HL7 v2 -> FHIR: value types, statuses, versions, charsets, refusals and ACKs."""

from __future__ import annotations

import hl7
import pytest

from adapters.hl7v2.codec import ack, decode, split_file
from adapters.hl7v2.mapping import Hl7Refused, map_message
from hub.fhir import validate
from tests.support.hl7_messages import NATIONAL_ID, adt, oru, pid


def by_id(resources: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in resources}


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_oru_maps_every_value_type_to_valid_fhir(version):
    mapped = map_message(oru(version=version), "township-1")
    res = by_id(mapped.resources)
    assert set(res) == {"LAB1", "LAB1-1", "LAB1-2", "LAB1-3", "LAB1-4"}
    for r in mapped.resources:
        assert validate(r, r["resourceType"]) == [], r
    glucose = res["LAB1-1"]
    assert glucose["valueQuantity"] == {"value": 7.2, "unit": "mmol/L",
                                        "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["referenceRange"][0]["low"]["value"] == 3.9
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["status"] == "final" and glucose["subject"]["reference"] == "Patient/P001"
    assert glucose["effectiveDateTime"] == "2026-11-01T08:00:00+08:00"
    assert glucose["specimen"]["display"] == "静脉血"
    assert res["LAB1-2"]["valueQuantity"]["comparator"] == "<"
    assert res["LAB1-3"]["valueString"] == "溶血"
    assert res["LAB1-4"]["valueCodeableConcept"]["coding"][0]["code"] == "A+"
    report = res["LAB1"]
    assert [r["reference"] for r in report["result"]] == [f"Observation/LAB1-{i}"
                                                         for i in range(1, 5)]
    assert report["category"][0]["coding"][0]["code"] == "LAB"


@pytest.mark.parametrize("code, status", [("F", "final"), ("P", "preliminary"),
                                          ("C", "corrected"), ("X", "cancelled"),
                                          ("D", "entered-in-error")])
def test_result_status_is_mapped(code, status):
    assert by_id(map_message(oru(status=code), "township-1").resources)["LAB1-1"][
        "status"] == status


def test_adt_gives_a_patient_with_national_id_and_chinese_name():
    patient = map_message(adt(), "township-1").resources[0]
    assert validate(patient, "Patient") == []
    assert patient["name"][0]["text"] == "张伟" and patient["gender"] == "male"
    assert patient["birthDate"] == "1960-03-05"
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    assert systems["urn:oid:2.16.156.10011.1.1"] == NATIONAL_ID
    assert systems["urn:hie:facility:township-1:mrn"] == "P001"


def test_gb18030_messages_decode_with_or_without_msh18():
    text = oru(charset="GB18030")
    raw = text.encode("gb18030")
    assert decode(raw) == (text, "gb18030")
    unlabelled = oru(charset="").encode("gb18030")
    decoded, enc = decode(unlabelled)
    assert enc == "gb18030" and "张^伟" in decoded and "溶血" in decoded
    assert decode(oru().encode("utf-8"))[1] == "utf-8"


@pytest.mark.parametrize("message, code, words", [
    (oru()[:60], "AR", "truncated"),
    (oru().replace("|||F|||20261101080000", "|||"), "AE", "unknown result status"),
    (adt().replace("ADT^A04", "ORM^O01"), "AR", "unsupported message type ORM^O01"),
    (oru(version="2.6"), "AR", "unsupported HL7 version"),
    (oru(glucose=""), "AE", "has no value"),
    (oru(patient=pid(mrn="", national_id=None)), "AE", "patient without identifiers"),
    (oru(glucose="seven"), "AE", "is not a number"),
    ("hello", "AR", "must start with MSH"),
    (oru().replace("township-1", "city-1", 1), "AR", "is not 'township-1'"),
])
def test_bad_messages_are_refused_with_a_reason(message, code, words):
    with pytest.raises(Hl7Refused) as caught:
        map_message(message, "township-1")
    assert caught.value.code == code and words in caught.value.reason


def test_ack_names_the_message_and_the_reason_safely():
    text = oru(control="C-42")
    reply = hl7.parse(ack(text, "AE", "OBX 1 (Glucose) has no value | status F").decode())
    msa = reply.segment("MSA")
    assert str(msa[1]) == "AE" and str(msa[2]) == "C-42"
    assert "has no value" in str(msa[3])
    assert str(reply.segment("MSH")[9]) == "ACK^R01^ACK"
    assert len(reply.segment("MSA")) == 4  # the '|' in the reason was escaped
    assert str(hl7.parse(ack(text, "AA").decode()).segment("MSA")[1]) == "AA"


def test_files_hold_framed_or_plain_messages():
    two = (oru(control="A") + oru(control="B")).encode()
    assert len(split_file(two)) == 2
    framed = b"".join(b"\x0b" + m.encode() + b"\x1c\x0d" for m in (adt(), oru()))
    assert [m[:3] for m in split_file(framed)] == [b"MSH", b"MSH"]
