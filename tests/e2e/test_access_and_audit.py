"""Scoped app tokens and the audit trail, through real HTTP."""

from __future__ import annotations

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from tests.support.hub_server import auth, eventually, running_hub, status_of
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
APP = "demo-app-token-chronic-dashboard"  # may read township-1/2 and village-1/2 patients


async def test_app_scopes_and_audit_trail(make_settings):
    async with running_hub(make_settings()) as (_, base):
        # Two different residents (the patient index must not link them: this test is about
        # scopes, and the audit trail follows the index's links).
        others = {"name": [{"text": "李娜", "family": "李", "given": ["娜"]}],
                  "birthDate": "1985-11-20"}
        for facility in ("township-1", "city-1"):
            async with httpx.AsyncClient(base_url=base,
                                         headers=auth(f"demo-secret-{facility}")) as c:
                resident = patient("p1") if facility == "township-1" else {**patient("p1"),
                                                                            **others}
                await c.put("/fhir/Patient/p1", json=resident)
                await c.put("/fhir/Observation/o1", json=observation("o1", pid="p1"))
        async with httpx.AsyncClient(base_url=base, headers=auth(APP)) as app, \
                httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1")) as city:

            async def both_visible() -> bool:
                return (await status_of(city, "/fhir/Observation/township-1.o1") == 200
                        and await status_of(city, "/fhir/Observation/city-1.o1") == 200)

            await eventually(both_visible)

            assert (await app.get("/fhir/Observation/township-1.o1")).status_code == 200
            refused = await app.get("/fhir/Observation/city-1.o1")
            assert refused.status_code == 403
            assert refused.json()["issue"][0]["code"] == "forbidden"
            assert "may not read patients of city-1" in refused.text
            r = await app.get("/fhir/Observation", params={"patient": "Patient/city-1.p1"})
            assert r.status_code == 403
            everything = (await app.get("/fhir/Observation")).json()
            assert [e["resource"]["id"] for e in everything["entry"]] == ["township-1.o1"]
            assert (await app.get("/fhir/AuditEvent",
                                  params={"patient": "township-1.p1"})).status_code == 403

            trail = (await city.get("/fhir/AuditEvent",
                                    params={"patient": "Patient/township-1.p1"})).json()
            events = [e["resource"] for e in trail["entry"]]
            for e in events:
                AuditEvent.model_validate(e)  # real FHIR R4B AuditEvents
            by_app = [e for e in events
                      if e["agent"][0]["who"]["identifier"]["value"] == "chronic-dashboard"]
            assert {(e["subtype"][0]["code"], e["outcome"]) for e in by_app} >= {
                ("read", "0"), ("search-type", "0"), ("search-type", "4")}
            assert any(ent.get("what", {}).get("reference") == "Observation/township-1.o1"
                       for e in by_app for ent in e["entity"])
            city_trail = (await city.get("/fhir/AuditEvent",
                                         params={"patient": "city-1.p1"})).json()
            refusals = [e["resource"] for e in city_trail["entry"]
                        if e["resource"]["outcome"] == "4"]
            assert len(refusals) == 2  # the refused read and the refused search

        async with httpx.AsyncClient(base_url=base) as anonymous:
            r = await anonymous.get("/fhir/AuditEvent", params={"patient": "township-1.p1"})
            assert r.status_code == 401
            r = await anonymous.get("/fhir/Patient/township-1.p1",
                                    headers=auth("not-a-real-token"))
            assert r.status_code == 401 and "unknown credential" in r.text
            # an app token cannot publish
            r = await anonymous.put("/fhir/Patient/x", json=patient("x"), headers=auth(APP))
            assert r.status_code == 401
