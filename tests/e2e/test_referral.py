"""Two-way referral through a running hub: routing by the registry, the green channel's SLA,
two clinicians accepting at once (exactly one wins), steps through the gateway and through
the API, the record package (JSON and FHIR Bundle), the down-referral that closes the loop,
loop-closure figures, the hie.referral.v1 feed, and a rebuild that gives the same states."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from fhir.resources.R4B.bundle import Bundle

from hub.engine.rebuild import rebuild
from hub.referral.projection import ReferralProjection
from hub.referral.rules import SERVICE_SYSTEM
from hub.schemas import schema_file
from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually, put_resource, running_hub
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
T1, T2, COUNTY, CITY = ("demo-secret-township-1", "demo-secret-township-2",
                        "demo-secret-county-1", "demo-secret-city-1")
REFERRAL = {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}


def referral(rid: str, pid: str, service: str, priority: str, **extra) -> dict:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "active", "intent": "order",
            "priority": priority, "category": [{"coding": [REFERRAL]}],
            "code": {"coding": [{"system": SERVICE_SYSTEM, "code": service}]},
            "subject": {"reference": f"Patient/{pid}"}, **extra}


def task(tid: str, referral_id: str, patient_key: str, status: str, who: str) -> dict:
    return {"resourceType": "Task", "id": tid, "status": status, "intent": "order",
            "focus": {"reference": f"ServiceRequest/{referral_id}"},
            "for": {"reference": f"Patient/{patient_key}"}, "owner": {"display": who}}


async def test_two_way_referral(make_settings, hub_clock, store_url):
    settings = make_settings(database_url=store_url,
                             referral_sla_minutes={"stat": 30, "urgent": 0.001})
    async with running_hub(settings) as (hub, base):
        glucose = {**observation("g1", value=7.9),
                   "effectiveDateTime": hub_clock.on(-2, "07:30:00")}
        await put_resource(base, T1, patient("p1"))
        await put_resource(base, T1, glucose)
        await put_resource(base, T1, {
            "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "condition-clinical", "code": "active"}]},
            "code": {"text": "hypertension"}})
        await put_resource(base, T1, referral(
            "sr1", "p1", "cardiology", "stat", reasonCode=[{"text": "chest pain"}],
            supportingInfo=[{"reference": "Observation/g1"}]))
        await put_resource(base, T2, {**patient("p2", "MRN2"), "gender": "male",
                                      "name": [{"text": "李建国"}], "birthDate": "1949-10-01"})
        await put_resource(base, T2, referral("sr2", "p2", "cardiology", "urgent"))

        county = httpx.AsyncClient(base_url=base, headers=auth(COUNTY))
        city = httpx.AsyncClient(base_url=base, headers=auth(CITY))
        t1 = httpx.AsyncClient(base_url=base, headers=auth(T1))
        t2 = httpx.AsyncClient(base_url=base, headers=auth(T2))
        try:
            async def incoming(client: httpx.AsyncClient, n: int) -> bool:
                return (await client.get("/referrals/incoming")).json()["count"] == n

            # Routed by the registry: cardiology from a township goes to its county hospital.
            await eventually(lambda: incoming(county, 2))
            work = (await county.get("/referrals/incoming")).json()["referrals"]
            assert [(r["id"], r["priority"], r["state"]) for r in work] == [
                ("township-1.sr1", "stat", "requested"),
                ("township-2.sr2", "urgent", "requested")]
            assert work[0]["receivers"] == ["county-1"] and not work[0]["breached"]
            assert work[1]["breached"] and work[1]["due"]  # an SLA of 0.06 s: missed
            assert (await city.get("/referrals/incoming")).json()["count"] == 0

            # The package is the sender's, and the receiver's once it accepted.
            early = await county.get("/referrals/township-1.sr1/package")
            assert early.status_code == 403 and "requested" in early.text

            # Two clinicians accept at once: exactly one wins, the other is told who holds it.
            a, b = await asyncio.gather(
                county.post("/referrals/township-1.sr1/accept", json={"clinician": "王医生"}),
                county.post("/referrals/township-1.sr1/accept", json={"clinician": "李医生"}))
            assert sorted((a.status_code, b.status_code)) == [200, 409], (a.text, b.text)
            winner = (a if a.status_code == 200 else b).json()["clinician"]
            loser = (a if a.status_code == 409 else b).json()
            assert loser["step"]["refused"] == \
                f"the referral is already accepted by county-1 ({winner})"
            wrong = await city.post("/referrals/township-1.sr1/accept", json={})
            assert wrong.status_code == 403 and "nor a receiver" in wrong.text
            no_reason = await county.post("/referrals/township-2.sr2/reject", json={})
            assert no_reason.status_code == 422
            rejected = await county.post("/referrals/township-2.sr2/reject",
                                         json={"reason": "no-capacity", "clinician": "王医生"})
            assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"

            package = (await county.get("/referrals/township-1.sr1/package")).json()
            (lab,) = package["lab"]
            assert lab["id"] == "Observation/township-1.g1" and lab["value"] == 7.9
            assert lab["recognition"]["status"] == "recognisable", lab
            assert [c["code"]["text"] for c in package["problems"]] == ["hypertension"]
            assert package["evidence"][0]["resource"]["id"] == "township-1.g1"
            fhir = (await county.get("/referrals/township-1.sr1/package",
                                     params={"format": "bundle"})).json()
            Bundle.model_validate(fhir)
            kinds = sorted(e["resource"]["resourceType"] for e in fhir["entry"])
            assert kinds == ["Condition", "Observation", "Patient", "ServiceRequest"]
            assert (await city.get("/referrals/township-1.sr1/package")).status_code == 403
            trail = (await t1.get("/fhir/AuditEvent",
                                  params={"patient": "Patient/township-1.p1"})).json()
            assert any("package" in (e["resource"]["entity"][1].get("description") or "")
                       and e["resource"]["agent"][0]["who"]["identifier"]["value"] ==
                       "county-1" for e in trail["entry"])

            # The receiving hospital's own system publishes the arrival through the gateway.
            await put_resource(base, COUNTY, task("arrive-1", "township-1.sr1",
                                                  "township-1.p1", "in-progress", winner))

            async def state(client, rid: str, expected: str) -> bool:
                return (await client.get(f"/referrals/{rid}")).json()["state"] == expected

            await eventually(lambda: state(county, "township-1.sr1", "in-progress"))
            done = await county.post("/referrals/township-1.sr1/complete", json={})
            assert done.status_code == 200 and done.json()["state"] == "completed"

            # Down-referral for rehabilitation, back to the township, closing the loop.
            await put_resource(base, COUNTY, referral(
                "dr1", "township-1.p1", "rehabilitation", "routine",
                basedOn=[{"reference": "ServiceRequest/township-1.sr1"}]))
            await eventually(lambda: incoming(t1, 1))
            (down,) = (await t1.get("/referrals/incoming")).json()["referrals"]
            assert (down["direction"], down["closes"], down["due"]) == (
                "down", "township-1.sr1", None)
            assert (await t1.post("/referrals/county-1.dr1/accept", json={})).status_code == 200
            out = (await t1.get("/referrals/outgoing")).json()["referrals"]
            assert [(r["id"], r["state"]) for r in out] == [("township-1.sr1", "completed")]
            assert (await t2.get("/referrals/outgoing", params={"state": "rejected"})
                    ).json()["count"] == 1

            stats = (await city.get("/referrals/statistics")).json()["rows"]
            (row,) = stats
            assert row["tier"] == "township-centre" and row["up_referrals"] == 2
            assert row["closed_by_down_referral"] == 1 and row["closure_rate"] == 0.5
            assert row["rejections"] == {"no-capacity": 1} and row["accepted"] == 1
            assert row["median_minutes_to_acceptance"] is not None
            assert row["sla_breaches"] == 1

            # The feed: every step with its decision, valid against its schema.
            # 2 requests, 2 accepts, the rejection, arrival, completion, the down-referral and
            # its acceptance (the city's attempt and the rejection without reason never left).
            feed = await read_json_topic(settings, settings.topics.referral, 9)
            schema = json.loads(schema_file("referral-feed.schema.json").read_text())
            for m in feed:
                jsonschema.validate(m, schema)
            accepts = [m for m in feed if m["referral"] == "ServiceRequest/township-1.sr1"
                       and m["step"]["to"] == "accepted"]
            assert len(feed) == 9 and sorted(m["applied"] for m in accepts) == [False, True]
            assert [m["state"] for m in feed if m["referral"].endswith("sr1")][-1] == \
                "completed"

            # Bad input: an OperationOutcome naming what is wrong.
            for path, code in (("/referrals/statistics?month=2026-13x", 400),
                               ("/referrals/incoming?state=lost", 400),
                               ("/referrals/township-1.nope", 404),
                               ("/referrals/township-1.sr1/package?format=pdf", 400)):
                r = await county.get(path)
                assert r.status_code == code, (path, r.text)
                assert r.json()["resourceType"] == "OperationOutcome", path
            r = await county.post("/referrals/township-1.sr1/fly", json={})
            assert r.status_code == 404 and "accept, reject" in r.text

            before = {r: (await county.get(f"/referrals/{r}")).json()
                      for r in ("township-1.sr1", "township-2.sr2", "county-1.dr1")}
        finally:
            for c in (county, city, t1, t2):
                await c.aclose()
        # A rebuild from the journal settles every step the same way.
        await asyncio.to_thread(rebuild, hub.store, ReferralProjection())
        async with httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county:
            after = {r: (await county.get(f"/referrals/{r}")).json() for r in before}
        assert after == before
