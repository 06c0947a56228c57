"""Exam at the grassroots, reading at the upper tier: routing by the registry, priorities,
concurrent claims (exactly one wins), claim expiry, reports with amendments and history,
delivery on hie.imaging.v1, turnaround on a fixed scenario."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest

from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually, put_resource, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def study(sid: str, modality: str, started: str, pid: str = "p1") -> dict:
    return {"resourceType": "ImagingStudy", "id": sid, "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:1.2.3.{len(sid)}"}],
            "modality": [{"system": DCM, "code": modality}],
            "subject": {"reference": f"Patient/{pid}"}, "started": started,
            "numberOfSeries": 1, "numberOfInstances": 20,
            "endpoint": [{"reference": "Endpoint/pacs"}]}


def request(rid: str, sid: str, priority: str) -> dict:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "active",
            "intent": "order", "priority": priority,
            "code": {"text": "reading"}, "subject": {"reference": "Patient/p1"},
            "supportingInfo": [{"reference": f"ImagingStudy/{sid}"}]}


def report(rid: str, study_ref: str, status: str, conclusion: str, issued: str,
           version: int = 1) -> dict:
    return {"resourceType": "DiagnosticReport", "id": rid, "status": status,
            "meta": {"versionId": str(version), "lastUpdated": issued},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v2-0074", "code": "RAD"}]}],
            "code": {"text": "imaging report"}, "subject": {"reference": "Patient/p1"},
            "imagingStudy": [{"reference": study_ref}], "issued": issued,
            "conclusion": conclusion,
            "conclusionCode": [{"coding": [{"system": "http://snomed.info/sct",
                                            "code": "17621005", "display": "Normal"}]}]}


put = put_resource


async def _is(got, expected) -> bool:
    return await got == expected


async def test_reading_workflow(make_settings, hub_clock):
    on = hub_clock.on
    settings = make_settings(imaging_claim_minutes=30)
    async with running_hub(settings) as (_, base):
        t1, t2, v1, c1 = ("demo-secret-township-1", "demo-secret-township-2",
                          "demo-secret-village-1", "demo-secret-community-1")
        await put(base, t1, patient("p1"))
        await put(base, t1, study("s1", "US", on(-20, "08:00:00")))
        await put(base, t1, study("s2", "ECG", on(-20, "08:10:00")))
        await put(base, t2, study("s3", "CT", on(-20, "08:20:00")))
        await put(base, v1, study("s4", "DX", on(-20, "08:30:00")))
        await put(base, c1, study("s5", "US", on(-20, "08:40:00")))
        await put(base, t1, request("r2", "s2", "stat"))
        await put(base, t1, request("r1", "s1", "urgent"))

        county = httpx.AsyncClient(base_url=base, headers=auth("demo-secret-county-1"))
        city = httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1"))
        try:
            async def listed(n: int) -> bool:
                w = (await county.get("/imaging/worklist")).json()
                return w["count"] == n and all(s["priority"] != "routine" for s in
                                               w["studies"][:2])

            # Routed by the registry: the county reads the townships' and villages' imaging
            # and ECG; the community centre's goes to the city hospital.
            await eventually(lambda: listed(4))
            work = (await county.get("/imaging/worklist")).json()["studies"]
            assert [(s["study_id"], s["priority"]) for s in work] == [
                ("township-1.s2", "stat"), ("township-1.s1", "urgent"),
                ("township-2.s3", "routine"), ("village-1.s4", "routine")]
            assert work[0]["service"] == "ecg" and work[1]["endpoint"] == "Endpoint/pacs"
            assert all(s["breached"] for s in work)  # acquired weeks ago: every SLA is missed
            city_work = (await city.get("/imaging/worklist")).json()["studies"]
            assert [s["study_id"] for s in city_work] == ["community-1.s5"]

            # Two readers claim at once: exactly one wins.
            a, b = await asyncio.gather(
                county.post("/imaging/studies/township-1.s1/claim", json={"reader": "王医生"}),
                county.post("/imaging/studies/township-1.s1/claim", json={"reader": "李医生"}))
            assert sorted((a.status_code, b.status_code)) == [200, 409], (a.text, b.text)
            winner = (a if a.status_code == 200 else b).json()["claim"]["reader"]
            loser = a if a.status_code == 409 else b
            assert loser.json()["claim"]["reader"] == winner
            wrong = await city.post("/imaging/studies/township-1.s1/claim",
                                    json={"reader": "赵医生"})
            assert wrong.status_code == 403 and "read at county-1" in wrong.text
            work = (await county.get("/imaging/worklist")).json()["studies"]
            assert next(s for s in work if s["study_id"] == "township-1.s1")["claim"][
                "reader"] == winner

            # A claim lapses: after it expires another reader takes the study.
            short = await county.post("/imaging/studies/township-2.s3/claim",
                                      json={"reader": "王医生", "minutes": 0.02})
            assert short.status_code == 200
            held = await county.post("/imaging/studies/township-2.s3/claim",
                                     json={"reader": "李医生"})
            assert held.status_code == 409
            await asyncio.sleep(1.5)
            later = await county.post("/imaging/studies/township-2.s3/claim",
                                      json={"reader": "李医生"})
            assert later.status_code == 200 and later.json()["claim"]["reader"] == "李医生"

            # The report removes the study from the worklist and goes back to the township;
            # an amendment supersedes it, with the history kept.
            await put(base, "demo-secret-county-1", report(
                "rep1", "ImagingStudy/township-1.s1", "final", "肝胆胰脾未见明显异常",
                on(-20, "08:40:00")))

            async def reported() -> bool:
                w = (await county.get("/imaging/worklist")).json()["studies"]
                return "township-1.s1" not in {s["study_id"] for s in w}

            await eventually(reported)
            await put(base, "demo-secret-county-1", report(
                "rep1", "ImagingStudy/township-1.s1", "amended", "胆囊小结石，建议复查",
                on(-20, "09:30:00"), version=2))
            await put(base, "demo-secret-county-1", report(
                "rep2", "ImagingStudy/township-1.s2", "final", "窦性心律，正常心电图",
                on(-20, "08:30:00")))

            async def amended() -> bool:
                h = (await county.get("/imaging/history",
                                      params={"patient": "township-1.p1"})).json()
                s1 = next((s for s in h["studies"] if s["study_id"] == "township-1.s1"), {})
                return s1.get("status") == "amended"

            await eventually(amended)
            hist = (await county.get("/imaging/history",
                                     params={"patient": "Patient/township-1.p1"})).json()
            s1 = next(s for s in hist["studies"] if s["study_id"] == "township-1.s1")
            assert s1["conclusion"] == "胆囊小结石，建议复查"
            assert [v["status"] for v in s1["report_history"]] == ["final", "amended"]

            # Cross-facility imaging history in FHIR search shape: the studies, and their
            # reports wherever they were read.
            async def both_studies() -> bool:  # the shared record has its own runner
                found = (await city.get("/fhir/ImagingStudy", params={
                    "patient": "township-1.p1"})).json()
                return {e["resource"]["id"] for e in found.get("entry", [])} == {
                    "township-1.s1", "township-1.s2"}

            async def both_reports() -> list:  # the shared record, not the worklist's view
                reports = (await city.get("/fhir/DiagnosticReport", params={
                    "patient": "township-1.p1", "category": "imaging"})).json()
                return [(e["resource"]["id"], e["resource"]["status"])
                        for e in reports.get("entry", [])]

            await eventually(both_studies)
            await eventually(lambda: _is(both_reports(), [("county-1.rep1", "amended"),
                                                          ("county-1.rep2", "final")]))

            # A report for a study the hub never received: kept and listed, not lost.
            await put(base, "demo-secret-county-1", report(
                "rep9", "ImagingStudy/township-1.nope", "final", "?",
                on(-20, "10:00:00")))

            async def unmatched() -> bool:
                r = (await county.get("/imaging/unmatched-reports")).json()["reports"]
                return [x["study_id"] for x in r] == ["township-1.nope"]

            await eventually(unmatched)

            # Turnaround on this fixed scenario: first report 40 min after acquisition for
            # s1 (US), 20 min for s2 (ECG); the amendment does not change it.
            async def both_reported() -> bool:
                rows = (await county.get("/imaging/turnaround")).json()["rows"]
                return sum(r["reports"] for r in rows) == 2

            await eventually(both_reported)
            tat = (await county.get("/imaging/turnaround", params={"by": "modality"})).json()
            rows = {r["modality"]: r for r in tat["rows"]}
            assert rows["US"]["p50_minutes"] == 40.0 and rows["US"]["day"] == hub_clock.date(-20)
            assert rows["ECG"]["p90_minutes"] == 20.0
            by_centre = (await county.get("/imaging/turnaround")).json()["rows"]
            assert by_centre == [{"centre": "county-1", "day": hub_clock.date(-20), "reports": 2,
                                  "p50_minutes": 20.0, "p90_minutes": 40.0}]
        finally:
            await county.aclose()
            await city.aclose()

        feed = [m for m in await read_json_topic(settings, settings.topics.imaging, 4)
                if "nope" not in m["study"]]
        schema = orjson.loads((Path(__file__).resolve().parents[2] / "schemas" /
                               "imaging-feed.schema.json").read_bytes())
        for m in feed:
            jsonschema.validate(m, schema)
        assert {m["facility"] for m in feed} == {"township-1"}
        assert [m["status"] for m in feed if m["study"] == "ImagingStudy/township-1.s1"] == [
            "final", "amended"]


async def test_a_pacs_drop_folder_reaches_the_reading_centre(make_settings, tmp_path):
    """hub dicom-scan on real DICOM files (pydicom's own test files) as township-1: the ECG
    goes to the county's ECG worklist, the unusable files are reported, and scanning again
    updates the studies rather than adding new ones."""
    import shutil

    import pydicom
    from typer.testing import CliRunner

    from hub.cli import app

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("CT_small.dcm", "waveform_ecg.dcm", "ExplVR_BigEnd.dcm"):
        shutil.copy(files / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    settings = make_settings()
    env = {"HUB_KAFKA_BOOTSTRAP": settings.bootstrap, "COLUMNS": "200",
           "HUB_TOPIC_INBOUND": settings.topics.inbound}
    async with running_hub(settings) as (_, base):
        for _ in range(2):
            result = await asyncio.to_thread(CliRunner().invoke, app, [
                "dicom-scan", str(tmp_path), "--facility", "township-1",
                "--endpoint", "https://pacs.township-1.example/dicomweb"], env=env)
            assert result.exit_code == 2, result.output  # two files skipped
            assert "2 studies published" in result.output
            assert "no Patient ID" in result.output and "not a DICOM file" in result.output
        async with httpx.AsyncClient(base_url=base,
                                     headers=auth("demo-secret-county-1")) as county:
            async def arrived() -> bool:
                w = (await county.get("/imaging/worklist")).json()
                return w["count"] == 2

            await eventually(arrived)
            ecg = (await county.get("/imaging/worklist", params={"service": "ecg"})).json()
            assert [s["modality"] for s in ecg["studies"]] == ["ECG"]
            assert ecg["studies"][0]["facility"] == "township-1"
