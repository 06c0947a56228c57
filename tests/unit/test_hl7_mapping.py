"""HL7 v2 -> FHIR: value types, ids, statuses, versions, charsets, refusals and ACKs."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7v2.codec import ack, decode, split_file
from adapters.hl7v2.mapping import Hl7Refused, map_message
from hub import clock
from hub.fhir import validate
from tests.support.hl7_messages import NATIONAL_ID, adt, msh, obr, oru, pid


def of_type(resources: list[dict], rtype: str) -> list[dict]:
    return [r for r in resources if r["resourceType"] == rtype]


def results(message: str, **kw) -> list[dict]:
    """The Observations of an ORU, in OBX order, each valid FHIR."""
    resources = map_message(message, "township-1", **kw).resources
    for r in resources:
        assert validate(r, r["resourceType"]) == [], r
    return of_type(resources, "Observation")


def loinc(res: dict) -> str:
    return next(c["code"] for c in res["code"]["coding"] if c.get("system") == "http://loinc.org")


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_oru_maps_every_value_type_to_valid_fhir(version):
    resources = map_message(oru(version=version), "township-1").resources
    for r in resources:
        assert validate(r, r["resourceType"]) == [], r
    assert sorted(r["resourceType"] for r in resources) == [
        "DiagnosticReport", "Observation", "Observation", "Observation", "Observation",
        "Organization", "Patient"]
    glucose, creatinine, remark, blood_group = of_type(resources, "Observation")
    assert glucose["valueQuantity"] == {"value": 7.2, "unit": "mmol/L",
                                        "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["referenceRange"][0]["low"] == {
        "value": 3.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["status"] == "final" and glucose["subject"]["reference"] == "Patient/P001"
    assert glucose["effectiveDateTime"] == "2026-11-01T08:00:00+08:00"
    assert glucose["specimen"]["display"] == "静脉血"
    assert creatinine["valueQuantity"]["comparator"] == "<"
    assert remark["valueString"] == "溶血"
    assert blood_group["valueCodeableConcept"]["coding"][0] == {
        "code": "A+", "system": "urn:hie:hl7v2:L", "display": "A型Rh阳性"}
    (report,) = of_type(resources, "DiagnosticReport")
    assert [r["reference"] for r in report["result"]] == [
        f"Observation/{o['id']}" for o in (glucose, creatinine, remark, blood_group)]
    assert report["category"][0]["coding"][0]["code"] == "LAB"
    assert report["identifier"][0]["value"] == "LAB1"
    (patient,) = of_type(resources, "Patient")  # the PID is a Patient the index can link
    assert patient["id"] == "P001" and patient["name"][0]["text"] == "张伟"
    (org,) = of_type(resources, "Organization")  # no OBX-23: the sending facility performed
    assert org["id"] == "township-1" and glucose["performer"] == [
        {"reference": "Organization/township-1"}] == report["performer"]


def test_ids_are_readable_stable_and_name_the_order_and_the_obx():
    first, again = results(oru()), results(oru(control="ORU2", glucose="6.8", status="C"))
    assert [o["id"] for o in first] == [o["id"] for o in again]  # a correction: same ids
    assert [o["id"].rsplit("-", 1)[0] for o in first] == [f"LAB1-{i}" for i in (1, 2, 3, 4)]
    assert len({o["id"] for o in first}) == 4
    other_order = results(oru(order="LAB2"))
    assert not {o["id"] for o in first} & {o["id"] for o in other_order}


def test_reports_sharing_a_filler_number_keep_their_own_ids():
    """Panels of one order (same OBR-3) told apart by OBR-1, the newborn-screening way."""
    message = oru(results=["OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F", obr(set_id="2"),
                           "OBX|1|NM|15074-8^Glucose^LN||7.9|mmol/L|||||F"])
    resources = map_message(message, "township-1").resources
    reports = of_type(resources, "DiagnosticReport")
    assert len(reports) == 2 and reports[0]["id"] != reports[1]["id"]
    a, b = of_type(resources, "Observation")
    assert a["id"] != b["id"] and [a["valueQuantity"]["value"], b["valueQuantity"]["value"]] \
        == [7.2, 7.9]
    assert [r["result"] for r in reports] == [[{"reference": f"Observation/{a['id']}"}],
                                              [{"reference": f"Observation/{b['id']}"}]]


def test_an_oru_about_two_patients_files_each_result_under_its_own():
    message = oru(results=[
        "OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F",
        pid(mrn="P002", name="李^娜", national_id=None), obr(order="LAB9"),
        "OBX|1|NM|15074-8^Glucose^LN||5.1|mmol/L|||||F"])
    resources = map_message(message, "township-1").resources
    assert [p["id"] for p in of_type(resources, "Patient")] == ["P001", "P002"]
    assert [(o["subject"]["reference"], o["valueQuantity"]["value"])
            for o in of_type(resources, "Observation")] == [("Patient/P001", 7.2),
                                                             ("Patient/P002", 5.1)]
    assert [r["subject"]["reference"] for r in of_type(resources, "DiagnosticReport")] == [
        "Patient/P001", "Patient/P002"]
    headless = "\r".join([msh("ORU^R01", "X1"), obr(), pid(),
                          "OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F"])
    with pytest.raises(Hl7Refused, match="OBR before any PID"):
        map_message(headless, "township-1")


def test_a_named_sending_facility_is_part_of_every_id():
    as_lis = results(oru(facility="TWP1-LIS"), senders=("TWP1-LIS",))
    assert not {o["id"] for o in as_lis} & {o["id"] for o in results(oru())}
    with pytest.raises(Hl7Refused, match="'TWP1-LIS' is not 'township-1'"):
        map_message(oru(facility="TWP1-LIS"), "township-1")


OBX_CODES = st.sampled_from(["15074-8^Glucose^LN", "2160-0^Creatinine^LN",
                             "600-7^Bacteria identified^LN", "LOCAL1^Note^L", ""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "1", "2"]), st.lists(st.tuples(
    st.sampled_from(["", "1", "2"]), OBX_CODES, st.sampled_from(["", "1", "2", "1.a"])),
    min_size=1, max_size=6)), min_size=1, max_size=3))
def test_every_obx_is_one_observation_whatever_its_ids_repeat(groups):
    """OBR set ids, OBX set ids, codes and sub-ids repeated at will, in one or several OBRs
    sharing one filler number: one Observation per OBX, one report per OBR, every id unique,
    each report listing its own results in order, and the same message mapped again gives
    the same ids."""
    segments = [msh("ORU^R01", "P1"), pid()]
    for n, (obr_set_id, obxs) in enumerate(groups, 1):
        segments.append(obr(set_id=obr_set_id))
        segments += [f"OBX|{set_id}|ST|{code}|{sub_id}|result {n}.{i}||||||F"
                     for i, (set_id, code, sub_id) in enumerate(obxs)]
    message = "\r".join(segments) + "\r"
    orders = [obxs for _, obxs in groups]
    resources = map_message(message, "township-1").resources
    observations = of_type(resources, "Observation")
    assert [o["valueString"] for o in observations] == [
        f"result {n}.{i}" for n, obxs in enumerate(orders, 1) for i in range(len(obxs))]
    assert len({(r["resourceType"], r["id"]) for r in resources}) == len(resources)
    reports = of_type(resources, "DiagnosticReport")
    assert [len(r["result"]) for r in reports] == [len(obxs) for obxs in orders]
    assert [x["reference"] for r in reports for x in r["result"]] == [
        f"Observation/{o['id']}" for o in observations]
    assert [r["id"] for r in map_message(message, "township-1").resources] == \
        [r["id"] for r in resources]


@pytest.mark.parametrize("obx, value", [
    ("OBX|1|XTN|62328-0^Provider phone^LN||^^PH^^^555^5551212||||||F",
     {"valueString": "555 5551212"}),
    ("OBX|1|XTN|62328-0^Provider phone^LN||^NET^Internet^lab@example.org||||||F",
     {"valueString": "lab@example.org"}),
    ("OBX|1|CX|56794-1^Donor id^LN||A123^^^LAB&1.2.3&ISO^MR||||||F",
     {"valueString": "A123 LAB&1.2.3&ISO MR"}),
    ("OBX|1|FN|1553-5^Glucose^LN||^182||||||F", {"valueString": "182"}),
    ("OBX|1|XPN|62324-9^Provider^LN||Healthy^Bob||||||F", {"valueString": "Healthy Bob"}),
    ("OBX|1|DT|11778-8^Delivery date^LN||20261030||||||F", {"valueDateTime": "2026-10-30"}),
    ("OBX|1|TS|33882-2^Collection time^LN||202610300815||||||F",
     {"valueDateTime": "2026-10-30T08:15:00+08:00"}),
    ("OBX|1|TM|57006-9^Time^LN||0815||||||F", {"valueTime": "08:15:00"}),
    ("OBX|1|TX|57710-6^Comment^LN||first line~second \\T\\ third||||||F",
     {"valueString": "first line\nsecond & third"}),
    ("OBX|1|FT|57710-6^Comment^LN||a\\.br\\b||||||F", {"valueString": "a\nb"}),
])
def test_text_like_value_types_are_kept_as_written(obx, value):
    (obs,) = results(oru(results=[obx]))
    assert {k: v for k, v in obs.items() if k.startswith("value")} == value


@pytest.mark.parametrize("obx, words", [
    ("OBX|1|RP|11502-2^Lab report^LN||http://lis/r/1^LIS^AP^PDF||||||F",
     "OBX 1 (Lab report): value type RP points to data held elsewhere"),
    ("OBX|1|ED|11502-2^Lab report^LN||^AP^PDF^Base64^not*base64||||||F",
     "OBX 1 (Lab report): ED data is not valid Base64"),
    ("OBX|1|NM|15074-8^Glucose^LN||7.2~7.4|mmol/L|||||F",
     "OBX 1 (Glucose): 2 repetitions of a NM value"),
    ("OBX|7|ZZ|15074-8^Glucose^LN||7.2|mmol/L|||||F", "OBX 7 (Glucose): value type 'ZZ'"),
])
def test_an_obx_the_hub_cannot_keep_refuses_the_whole_message(obx, words):
    """Never AA without a result: the message is refused, the OBX named."""
    message = oru(results=["OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F", obx])
    with pytest.raises(Hl7Refused) as refused:
        map_message(message, "township-1")
    assert refused.value.code == "AE" and words in refused.value.reason


def test_an_encapsulated_document_is_kept_on_its_observation_and_presented_by_the_report():
    resources = map_message(oru(results=[
        "OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F",
        "OBX|2|ED|11502-2^Lab report^LN||LIS^AP^PDF^Base64^JVBERi0xLjQK||||||F",
        "OBX|3|ED|11502-2^Lab report^LN||LIS^TEXT^PLAIN^A^fasting \\T\\ rested||||||F"]),
        "township-1").resources
    for r in resources:
        assert validate(r, r["resourceType"]) == [], r
    _, pdf, note = of_type(resources, "Observation")
    (report,) = of_type(resources, "DiagnosticReport")
    assert pdf["extension"] == [{
        "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value",
        "valueAttachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"}}]
    assert note["extension"][0]["valueAttachment"] == {
        "contentType": "text/plain", "data": "ZmFzdGluZyAmIHJlc3RlZA=="}  # "fasting & rested"
    assert report["presentedForm"] == [
        {"contentType": "application/pdf", "data": "JVBERi0xLjQK", "title": "Lab report"},
        {"contentType": "text/plain", "data": "ZmFzdGluZyAmIHJlc3RlZA==", "title": "Lab report"}]


def test_notes_specimen_ranges_codes_and_performing_lab():
    (obs,) = results(oru(version="2.5.1", results=[
        "NTE|1|L|Order comment",
        "OBX|1|NM|20260^Albumin Urine^AEL^14957-5^Albumin Urine^LN|MACR|25|ug/dl^^UCUM|"
        "<10 ug/dl|H|||F|||20261101080000|||||20261101090000||||Lab^L^^^^CLIA&2.16.840.1"
        ".113883.4.7&ISO^XX^^^45D0660644|1100 W.49th St^^Austin^TX^78756^USA^B",
        "NTE|1|L|Repeated;\\.br\\confirmed",
        "NTE|2|L|second note line",
        "SPM|1|S1&LIS^F1&LAB||122554006^Capillary blood specimen^SCT^BLDC^Blood capillary"
        "^HL70070|||||||||||||20261101075500^20261101080000|20261101081000",
    ]))
    assert obs["code"]["coding"] == [
        {"code": "20260", "system": "urn:hie:hl7v2:AEL", "display": "Albumin Urine"},
        {"code": "14957-5", "system": "http://loinc.org", "display": "Albumin Urine"}]
    assert obs["referenceRange"] == [{"high": {"value": 10.0, "unit": "ug/dl", "system":
                                               "http://unitsofmeasure.org", "code": "ug/dl"}}]
    assert obs["note"] == [{"text": "Repeated;\nconfirmed\nsecond note line"}]
    resources = map_message(oru(results=[
        "NTE|1|L|Order comment", "OBX|1|NM|14957-5^Albumin^LN||25|ug/dl|||||F",
        "SPM|1|S1&LIS^F1&LAB||122554006^Capillary blood specimen^SCT|||||||||||||"
        "20261101075500^20261101080000|20261101081000"]), "township-1").resources
    (specimen,) = of_type(resources, "Specimen")
    assert specimen["type"]["coding"][0] == {"code": "122554006",
                                             "system": "http://snomed.info/sct",
                                             "display": "Capillary blood specimen"}
    assert specimen["collection"]["collectedPeriod"] == {
        "start": "2026-11-01T07:55:00+08:00", "end": "2026-11-01T08:00:00+08:00"}
    assert specimen["receivedTime"] == "2026-11-01T08:10:00+08:00"
    assert [i["value"] for i in specimen["identifier"]] == ["S1", "F1"]
    assert specimen["subject"] == {"reference": "Patient/P001"}
    (report,) = of_type(resources, "DiagnosticReport")
    assert report["specimen"] == [{"reference": f"Specimen/{specimen['id']}"}]
    assert report["extension"][0]["valueAnnotation"] == {"text": "Order comment"}
    assert of_type(resources, "Observation")[0]["specimen"] == {
        "reference": f"Specimen/{specimen['id']}", "display": "Capillary blood specimen"}
    (lab,) = [o for o in of_type(map_message(oru(results=[
        "OBX|1|NM|14957-5^Albumin^LN||25|ug/dl|||||F||||||||||||Lab^L^^^^CLIA&2.16.840.1"
        ".113883.4.7&ISO^XX^^^45D0660644|1100 W.49th St^^Austin^TX^78756^USA^B"]),
        "township-1").resources, "Organization") if o["id"] != "township-1"]
    assert lab["name"] == "Lab" and lab["identifier"][0]["value"] == "45D0660644"
    assert lab["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.4.7"
    assert lab["address"][0]["city"] == "Austin"


def test_times_without_an_offset_are_in_the_facility_zone():
    (obs,) = results(oru(results=["OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F|||"
                                  "20261101080000"]), tz=ZoneInfo("Asia/Urumqi"))
    assert obs["effectiveDateTime"] == "2026-11-01T08:00:00+06:00"
    (obs,) = results(oru(results=["OBX|1|NM|15074-8^Glucose^LN||7.2|mmol/L|||||F|||"
                                  "20261101080000-0500"]), tz=ZoneInfo("Asia/Urumqi"))
    assert obs["effectiveDateTime"] == "2026-11-01T08:00:00-05:00"  # a sent offset wins


@pytest.mark.parametrize("code, status", [("F", "final"), ("P", "preliminary"),
                                          ("C", "corrected"), ("X", "cancelled"),
                                          ("D", "entered-in-error")])
def test_result_status_is_mapped(code, status):
    assert results(oru(status=code))[0]["status"] == status


def test_adt_gives_a_patient_with_national_id_and_chinese_name():
    patient = map_message(adt(), "township-1").resources[0]
    assert validate(patient, "Patient") == []
    assert patient["name"][0] == {"text": "张伟", "family": "张", "given": ["伟"]}
    assert patient["gender"] == "male"
    assert patient["address"] == [{"text": "浙江嘉兴中山路12号", "line": ["中山路12号"],
                                   "city": "嘉兴", "state": "浙江", "postalCode": "314000"}]
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
    (oru(glucose="nan"), "AE", "NM value 'nan' is not a number"),
    (oru(glucose="1e5"), "AE", "NM value '1e5' is not a number"),
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


def test_the_ack_time_is_a_local_time_of_the_facility_zone(hub_clock):
    """MSH-7 of the ACK carries no offset: it is written in the zone the facility reads
    times in, the one its messages are read in."""
    at = clock.now()
    previous = clock.use_clock(clock.FixedClock(at))
    try:
        xinjiang = str(hl7.parse(ack(oru(), "AA", tz=ZoneInfo("Asia/Urumqi")).decode())
                       .segment("MSH")[7])
        default = str(hl7.parse(ack(oru(), "AA").decode()).segment("MSH")[7])
    finally:
        clock.use_clock(previous)
    assert xinjiang == at.astimezone(ZoneInfo("Asia/Urumqi")).strftime("%Y%m%d%H%M%S")
    assert default == at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S")
