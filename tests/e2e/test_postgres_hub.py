"""The whole hub on PostgreSQL (the at-scale store): the registry, the patient index, lab
results, claims settled by log order, recognition, and the SQL leases, in one scenario."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from hub.demo.population import gb11643_check
from tests.support.clocks import local_time
from tests.support.hub_server import auth, eventually, put_resource, running_hub
from tests.support.stores import drop_schema, postgres_schema_url

pytestmark = [pytest.mark.e2e, pytest.mark.contract, pytest.mark.postgres]
BODY = "33040219700101123"
NID = BODY + gb11643_check(BODY)


@pytest.fixture
def pg_url():
    found = postgres_schema_url()
    if found is None:
        pytest.skip("no PostgreSQL reachable at HUB_TEST_POSTGRES_URL / 127.0.0.1:5432 (db test)")
    url, schema = found
    yield url
    drop_schema(schema)


def person(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid,
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": NID}],
            "name": [{"text": "王芳"}], "gender": "female", "birthDate": "1970-01-01"}


async def test_hub_on_postgres(make_settings, pg_url):
    settings = make_settings(database_url=pg_url, mpi_poll_seconds=0.1)
    async with running_hub(settings) as (hub, base):
        assert hub.store.dialect == "postgresql"

        async def put(token: str, res: dict) -> None:
            await put_resource(base, token, res)

        t1, county = "demo-secret-township-1", "demo-secret-county-1"
        await put(t1, person("p1"))
        await put(county, person("p9"))
        await put(t1, {
            "resourceType": "Observation", "id": "g1", "status": "final",
            "category": [{"coding": [{"code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": local_time(-2),
            "valueQuantity": {"value": 100, "unit": "mg/dL",
                              "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
        await put(t1, {
            "resourceType": "ImagingStudy", "id": "s1", "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            "modality": [{"code": "US"}], "subject": {"reference": "Patient/p1"},
            "started": local_time(-2)})
        async with httpx.AsyncClient(base_url=base, headers=auth(county)) as c:
            async def ready() -> bool:
                linked = (await c.get("/mpi/records/county-1.p9")).json()["records"]
                work = (await c.get("/imaging/worklist")).json()["count"]
                summary = await c.get("/fhir/Patient/county-1.p9/$lab-summary")
                return (linked == ["county-1.p9", "township-1.p1"] and work == 1
                        and summary.status_code == 200
                        and bool(summary.json()["analytes"]))

            await eventually(ready)
            summary = (await c.get("/fhir/Patient/county-1.p9/$lab-summary")).json()
            glucose = summary["analytes"][0]
            assert glucose["analyte"] == "glucose"
            assert abs(glucose["latest"]["value_norm"] - 5.55) < 0.01

            a, b = await asyncio.gather(
                c.post("/imaging/studies/township-1.s1/claim", json={"reader": "甲"}),
                c.post("/imaging/studies/township-1.s1/claim", json={"reader": "乙"}))
            assert sorted((a.status_code, b.status_code)) == [200, 409], (a.text, b.text)

            check = (await c.post("/recognition/$check", json={
                "patient": "county-1.p9", "items": ["GLU"],
                "time": local_time(-1, "09:00:00")})).json()
            assert [r["result"] for r in check["items"][0]["recognisable"]] == [
                "township-1.g1"]
