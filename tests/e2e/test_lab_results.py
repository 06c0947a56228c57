"""Shared lab results end to end: facilities publish, the lab projection honours the status
lifecycle and the version order, normalises units, and a real FHIR client (fhirpy) searches
by patient, code and date with paging; the change feed carries every change."""

from __future__ import annotations

from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest
from fhirpy import AsyncFHIRClient

from tests.support.events import envelope, publish, read_json_topic
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                   "code": "laboratory"}]}


def lab(oid: str, loinc: str, value: float, unit: str, when: str, version: int = 1,
        status: str = "final", low: float | None = None, high: float | None = None,
        interpretation: str | None = None, facility: str = "township-1") -> dict:
    obs = {"resourceType": "Observation", "id": oid, "status": status, "category": [LAB],
           "meta": {"versionId": str(version), "lastUpdated": f"{when[:10]}T12:00:0{version}Z"},
           "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
           "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                             "code": unit},
           "performer": [{"reference": f"Organization/{facility}"}],
           "specimen": {"display": "venous blood"}}
    if low is not None:
        obs["referenceRange"] = [{"low": {"value": low, "unit": unit},
                                  "high": {"value": high, "unit": unit}}]
    if interpretation:
        obs["interpretation"] = [{"coding": [{"code": interpretation}]}]
    return obs


async def test_lab_results_across_facilities(make_settings):
    settings = make_settings()
    report = {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                   "v2-0074", "code": "LAB"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
              "subject": {"reference": "Patient/p1"},
              "effectiveDateTime": "2026-10-02T08:00:00+08:00",
              "result": [{"reference": "Observation/g2"}]}
    events = [
        envelope(patient("p1")), envelope(patient("p1"), "county-1"),
        # glucose in mg/dL at the township (high by its range), in mmol/L at the county
        envelope(lab("g1", "2339-0", 126, "mg/dL", "2026-09-01T08:00:00+08:00",
                     low=70, high=110)),
        envelope(lab("g2", "15074-8", 5.2, "mmol/L", "2026-10-02T08:00:00+08:00",
                     interpretation="N", facility="county-1"), "county-1"),
        # an amended result, then its late-arriving first version: the amendment stays
        envelope(lab("c1", "14682-9", 95, "umol/L", "2026-10-05T08:00:00+08:00", version=2,
                     status="amended", low=57, high=111)),
        envelope(lab("c1", "14682-9", 150, "umol/L", "2026-10-05T08:00:00+08:00", version=1,
                     low=57, high=111)),
        # entered in error: gone from every view
        envelope(lab("x1", "2339-0", 300, "mg/dL", "2026-10-06T08:00:00+08:00")),
        envelope(lab("x1", "2339-0", 300, "mg/dL", "2026-10-06T08:00:00+08:00", version=2,
                     status="entered-in-error")),
        envelope(report, "county-1"),
    ]
    await publish(settings, events)
    async with running_hub(settings) as (_, base):
        fhir = AsyncFHIRClient(f"{base}/fhir", authorization="Bearer demo-secret-city-1")

        async def glucose() -> list:
            return await fhir.resources("Observation").search(
                patient="Patient/township-1.p1", code="http://loinc.org|2339-0,15074-8"
            ).fetch_all()

        # The index links the two records of the same resident, so both facilities' results
        # come back for either record.
        async def all_applied() -> bool:  # both facilities' events, to the last version
            if len(await glucose()) != 2:
                return False
            labs = await fhir.resources("Observation").search(
                patient="county-1.p1", category="laboratory").fetch_all()
            reports = await fhir.resources("DiagnosticReport").search(
                patient="township-1.p1", category="LAB").fetch_all()
            return len(labs) == 3 and len(reports) == 1 and any(
                o["id"] == "township-1.c1" and o["status"] == "amended" for o in labs)

        await eventually(all_applied)
        found = await fhir.resources("Observation").search(
            patient="township-1.p1", code="2339-0,15074-8", date="ge2026-09-15"
        ).sort("-date").fetch_all()
        assert [o["id"] for o in found] == ["county-1.g2"]
        paged = await fhir.resources("Observation").search(
            patient="county-1.p1", category="laboratory").sort("-date").limit(1).fetch_all()
        assert [o["id"] for o in paged] == ["township-1.c1", "county-1.g2", "township-1.g1"]
        creatinine = next(o for o in paged if o["id"] == "township-1.c1")
        assert creatinine["status"] == "amended" and creatinine["valueQuantity"]["value"] == 95
        g1 = next(o for o in paged if o["id"] == "township-1.g1")
        norm = next(e for e in g1["extension"] if e["url"] == "urn:hie:ext:normalised-value")
        assert norm["valueQuantity"]["code"] == "mmol/L"
        assert abs(norm["valueQuantity"]["value"] - 6.99) < 0.01
        assert g1["interpretation"][0]["coding"][0]["code"] == "H"  # from its range

        reports = await fhir.resources("DiagnosticReport").search(
            patient="township-1.p1", category="LAB").fetch_all()
        assert [r["id"] for r in reports] == ["county-1.dr1"]
        assert reports[0]["result"][0]["reference"] == "Observation/county-1.g2"

        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1")) as c:
            summary = (await c.get("/fhir/Patient/township-1.p1/$lab-summary")).json()
            by = {a["analyte"]: a for a in summary["analytes"]}
            assert set(by) == {"glucose", "creatinine"}
            assert by["glucose"]["latest"]["performer"] == "county-1"
            assert [round(t["value"], 2) for t in by["glucose"]["trend"]] == [6.99, 5.2]
            assert {t["unit"] for t in by["glucose"]["trend"]} == {"mmol/L"}
            assert by["creatinine"]["latest"]["flag"] == "N"
            assert by["creatinine"]["latest"]["specimen"] == "venous blood"
            bad = await c.get("/fhir/Observation", params={"patient": "township-1.p1",
                                                           "date": "soon"})
            assert bad.status_code == 400 and "not a FHIR date" in bad.text
            odd = await c.get("/fhir/Observation", params={"code": "urn:x|1"})
            assert odd.status_code == 400 and "only LOINC" in odd.text

        feed = await read_json_topic(settings, settings.topics.lab, 6)
        assert len({m["id"] for m in feed}) == 6  # every lab result event, once
        schema = orjson.loads((SCHEMAS / "lab-feed.schema.json").read_bytes())
        for m in feed:
            jsonschema.validate(m, schema)
        gone = [m for m in feed if m["resource"] == "Observation/township-1.x1"]
        assert gone[-1]["visible"] is False and gone[-1]["status"] == "entered-in-error"
