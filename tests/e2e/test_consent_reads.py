"""A patient's consent honoured beyond the shared record's FHIR reads: the imaging API, the
recognition check, the patient index, remote monitoring and the console's worklists. Each
read works before the resident opts out; after, a read naming the patient is a 403
OperationOutcome saying a consent rule applied, with an audited refusal naming the consent,
and a list leaves the patient out (without naming them in its own audit record)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent

from hub import clock
from hub.consent.rules import APP_SYSTEM
from hub.demo.population import gb11643_check
from hub.mpi.service import linked_records
from hub.store.schema import recognition_prompts
from tests.e2e.test_imaging import study
from tests.e2e.test_patient_index import resident
from tests.e2e.test_recognition import glucose
from tests.support.console import login
from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually, put_resource, running_hub, status_of
from tests.support.resources import consent, consent_actor, observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
TOWNSHIP, COMMUNITY = "demo-secret-township-1", "demo-secret-community-1"
COUNTY, CITY = "demo-secret-county-1", "demo-secret-city-1"
OPS = "demo-app-token-consortium-ops"  # the console's operators: every page, every patient
BODY = "33040219710615123"
NATIONAL_ID = BODY + gb11643_check(BODY)


def keeps_out(facility: str) -> dict:
    """A deny provision naming one facility (as an Organization), every purpose."""
    return {"type": "deny", "actor": [consent_actor(None, facility)]}


async def opt_out(base: str, token: str, facility: str, pid: str, deny: dict) -> None:
    """File the patient's consent and wait until the shared record holds it."""
    await put_resource(base, token, consent(deny, cid="c9", pid=pid))
    async with httpx.AsyncClient(base_url=base, headers=auth(token)) as c:
        async def held() -> bool:
            return await status_of(c, f"/fhir/Consent/{facility}.c9") == 200

        await eventually(held)


async def trail(base: str, token: str, key: str, reader: str) -> list[dict]:
    """``reader``'s entries in the patient's audit trail (read by the facility holding it)."""
    async with httpx.AsyncClient(base_url=base, headers=auth(token)) as c:
        found = (await c.get("/fhir/AuditEvent", params={"patient": key, "_count": 500})).json()
    events = [e["resource"] for e in found.get("entry", [])]
    for e in events:
        AuditEvent.model_validate(e)
    return [e for e in events if e["agent"][0]["who"]["identifier"]["value"] == reader]


def refused_by_consent(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome" and \
        "a consent rule applied" in r.json()["issue"][0]["diagnostics"] and \
        "Consent/" in r.json()["issue"][0]["diagnostics"]


def _what(e: dict) -> str:
    return e["entity"][-1].get("description") or e["entity"][-1]["what"]["reference"]


def consent_refusals(events: list[dict], what: str) -> list[dict]:
    return [e for e in events if e["outcome"] == "4" and what in _what(e)
            and "Consent/" in e.get("outcomeDesc", "")]


def named(events: list[dict], what: str) -> list[dict]:
    return [e for e in events if e["outcome"] == "0" and what in _what(e)]


async def test_imaging_worklist_claim_and_history_honour_consent(make_settings, hub_clock):
    async with running_hub(make_settings()) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county, \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city:
        await put_resource(base, TOWNSHIP, patient("p2"))
        await put_resource(base, TOWNSHIP, study("s9", "ECG", hub_clock.on(-2, "08:00:00"),
                                                 pid="p2"))

        async def listed() -> bool:
            w = (await county.get("/imaging/worklist")).json()
            return "township-1.s9" in {s["study_id"] for s in w["studies"]}

        # Before the opt-out the county (the township's reading centre) lists and reads it.
        await eventually(listed)
        history = await county.get("/imaging/history", params={"patient": "township-1.p2"})
        assert history.status_code == 200 and history.json()["studies"]
        async with httpx.AsyncClient(base_url=base) as console:
            await login(console, COUNTY)
            page = await console.get("/console/reading", params={"centre": "county-1"})
            assert "township-1.s9" in page.text and "township-1.p2" in page.text

        await opt_out(base, TOWNSHIP, "township-1", "p2", keeps_out("county-1"))
        assert not await listed()
        claim = await county.post("/imaging/studies/township-1.s9/claim",
                                  json={"reader": "王医生"})
        assert refused_by_consent(claim), claim.text
        history = await county.get("/imaging/history", params={"patient": "township-1.p2"})
        assert refused_by_consent(history), history.text
        async with httpx.AsyncClient(base_url=base) as console:
            await login(console, COUNTY)
            page = await console.get("/console/reading", params={"centre": "county-1"})
            assert page.status_code == 200 and "township-1.s9" not in page.text
            assert "township-1.p2" not in page.text
        # Another facility the consent does not name still reads the history.
        assert (await city.get("/imaging/history",
                               params={"patient": "township-1.p2"})).status_code == 200

        events = await trail(base, TOWNSHIP, "township-1.p2", "county-1")
        assert consent_refusals(events, "imaging/history")
        assert consent_refusals(events, "imaging/studies/township-1.s9/claim")
        # The worklist read before the opt-out named the patient; after it, no longer.
        assert len(named(events, "imaging/worklist")) >= 1
        count = len(named(events, "imaging/worklist"))
        await county.get("/imaging/worklist")
        assert len(named(await trail(base, TOWNSHIP, "township-1.p2", "county-1"),
                         "imaging/worklist")) == count


async def test_recognition_check_honours_consent(make_settings, hub_clock):
    async with running_hub(make_settings()) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city, \
            httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county:
        await put_resource(base, TOWNSHIP, patient("p2"))
        await put_resource(base, TOWNSHIP, {**glucose("g9", hub_clock.on(-2, "08:00:00")),
                                            "subject": {"reference": "Patient/p2"}})
        ask = {"patient": "Patient/township-1.p2", "items": ["GLU"],
               "time": hub_clock.on(-1, "09:00:00")}

        async def recognisable(c: httpx.AsyncClient) -> list[str]:
            r = await c.post("/recognition/$check", json=ask)
            assert r.status_code == 200, r.text
            return [x["result"] for x in r.json()["items"][0]["recognisable"]]

        async def seen() -> bool:
            return await recognisable(city) == ["township-1.g9"]

        await eventually(seen)
        await opt_out(base, TOWNSHIP, "township-1", "p2", keeps_out("city-1"))
        refused = await city.post("/recognition/$check", json=ask)
        assert refused_by_consent(refused), refused.text
        assert await recognisable(county) == ["township-1.g9"]
        events = await trail(base, TOWNSHIP, "township-1.p2", "city-1")
        assert named(events, "recognition/$check")  # before the opt-out
        assert consent_refusals(events, "recognition/$check")
        # Statistics name no patient: not a patient read, still served.
        assert (await city.get("/recognition/statistics")).status_code == 200


async def test_patient_index_honours_consent(make_settings):
    settings = make_settings(mpi_poll_seconds=0.1)
    async with running_hub(settings) as (hub, base), \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city, \
            httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county:
        store = hub.store
        # One resident at the township and the city (same national ID), and a record at the
        # village with that ID but another sex: a conflict review naming the township's.
        await put_resource(base, TOWNSHIP, resident("p2", "张伟", "1971-06-15",
                                                    national_id=NATIONAL_ID))

        async def indexed(key: str, expected: set[str]) -> bool:
            return set(await asyncio.to_thread(linked_records, store, key)) == expected

        await eventually(lambda: indexed("township-1.p2", {"township-1.p2"}))
        await put_resource(base, "demo-secret-village-1", resident(
            "p4", "张伟", "1971-06-15", sex="female", national_id=NATIONAL_ID))
        await put_resource(base, CITY, resident("p3", "张伟", "1971-06-15",
                                                national_id=NATIONAL_ID))
        same = {"township-1.p2", "city-1.p3"}
        await eventually(lambda: indexed("township-1.p2", same))
        await put_resource(base, TOWNSHIP, observation("o9", pid="p2"))

        async def reviews(c: httpx.AsyncClient) -> set[tuple[str, str]]:
            r = await c.get("/mpi/reviews")
            assert r.status_code == 200, r.text
            return {(x["record"], x["candidate_record"]) for x in r.json()["reviews"]}

        async def conflict() -> bool:
            return ("village-1.p4", "township-1.p2") in await reviews(city)

        async def township_obs() -> bool:
            r = await city.get("/fhir/Observation", params={"patient": "city-1.p3"})
            return "township-1.o9" in {e["resource"]["id"] for e in r.json().get("entry", [])}

        await eventually(conflict)
        await eventually(township_obs)
        r = await city.get("/mpi/records/township-1.p2")
        assert r.status_code == 200 and set(r.json()["records"]) == same

        await opt_out(base, TOWNSHIP, "township-1", "p2", keeps_out("city-1"))
        refused = await city.get("/mpi/records/township-1.p2")
        assert refused_by_consent(refused), refused.text
        # The city's own record of the resident: its own, without the township's.
        mine = await city.get("/mpi/records/city-1.p3")
        assert mine.status_code == 200 and mine.json()["records"] == ["city-1.p3"]
        assert not await township_obs()
        # The same holds for the read API's other reads of the city's own record, and for
        # the township's record's audit trail (who read the resident is the resident's).
        summary = (await city.get("/fhir/Patient/city-1.p3/$lab-summary")).json()
        assert summary["records"] == ["city-1.p3"]
        trail_read = await city.get("/fhir/AuditEvent", params={"patient": "township-1.p2"})
        assert refused_by_consent(trail_read), trail_read.text
        assert ("village-1.p4", "township-1.p2") not in await reviews(city)
        assert ("village-1.p4", "township-1.p2") in await reviews(county)
        events = await trail(base, TOWNSHIP, "township-1.p2", "city-1")
        assert consent_refusals(events, "mpi/records/township-1.p2")
        assert named(events, "mpi/reviews")  # before the opt-out
        count = len(named(events, "mpi/reviews"))
        await reviews(city)
        assert len(named(await trail(base, TOWNSHIP, "township-1.p2", "city-1"),
                         "mpi/reviews")) == count


async def test_monitoring_honours_consent(make_settings):
    home3 = "community-1.home-03"  # team-c1 at community-1; its critical alerts go to city-1
    async with running_hub(make_settings()) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(COMMUNITY)) as team, \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city:
        at = (clock.now() - timedelta(hours=1)).isoformat()
        r = await team.post("/devices/glu-c1-03/readings",
                            json={"time": at, "glucose": 18.2, "unit": "mmol/L"})
        assert r.status_code == 201, r.text

        async def escalated(c: httpx.AsyncClient) -> list[dict]:
            r = await c.get("/monitoring/worklist", params={"escalated": "true"})
            assert r.status_code == 200, r.text
            return [a for a in r.json()["alerts"] if a["patient_key"] == home3]

        async def reached_city() -> bool:
            return bool(await escalated(city))

        await eventually(reached_city)
        alert = (await escalated(city))[0]
        assert (await city.get(f"/monitoring/patients/{home3}")).status_code == 200
        async with httpx.AsyncClient(base_url=base) as console:
            await login(console, OPS)
            page = await console.get("/console/monitoring", params={"team": "team-c1"})
            assert home3 in page.text

        # Kept out: the city hospital, and the consortium's operators.
        deny = keeps_out("city-1")
        deny["actor"].append(consent_actor(APP_SYSTEM, "consortium-ops"))
        await opt_out(base, COMMUNITY, "community-1", "home-03", deny)
        assert await escalated(city) == []
        refused = await city.get(f"/monitoring/patients/{home3}")
        assert refused_by_consent(refused), refused.text
        acted = await city.post(f"/monitoring/alerts/{alert['id']}/acknowledge",
                                json={"by": "赵医生"})
        assert refused_by_consent(acted), acted.text
        async with httpx.AsyncClient(base_url=base) as console:
            await login(console, OPS)
            page = await console.get("/console/monitoring", params={"team": "team-c1"})
            assert page.status_code == 200 and "Alerts of team-c1" in page.text
            assert home3 not in page.text
        # The team's facility holds the record: its worklist and reads are whole.
        r = await team.get("/monitoring/worklist")
        assert home3 in {a["patient_key"] for a in r.json()["alerts"]}
        assert (await team.get(f"/monitoring/patients/{home3}")).status_code == 200

        events = await trail(base, COMMUNITY, home3, "city-1")
        assert consent_refusals(events, f"monitoring/patients/{home3}")
        assert consent_refusals(events, f"monitoring/alerts/{alert['id']}")
        assert named(events, "monitoring/worklist")  # before the opt-out
        count = len(named(events, "monitoring/worklist"))
        await escalated(city)
        assert len(named(await trail(base, COMMUNITY, home3, "city-1"),
                         "monitoring/worklist")) == count


async def test_recognition_of_a_readers_own_patient_leaves_out_withheld_records(
        make_settings, hub_clock):
    """The county holds its own record of a resident the index links with the township's;
    the resident keeps the county out of the township's record. The county's check of its
    own record, and the prompt the prompter sends when it orders, no longer offer the
    township's result (an open prompt relying on it is withdrawn)."""
    on = hub_clock.on
    settings = make_settings(mpi_poll_seconds=0.1)
    async with running_hub(settings) as (hub, base), \
            httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county:
        await put_resource(base, TOWNSHIP, resident("p1", "张伟", "1971-06-15",
                                                    national_id=NATIONAL_ID))
        await put_resource(base, COUNTY, resident("p7", "张伟", "1971-06-15",
                                                  national_id=NATIONAL_ID))
        await put_resource(base, TOWNSHIP, glucose("g1", on(-4, "08:00:00")))

        async def recognisable() -> list[str]:
            r = await county.post("/recognition/$check", json={
                "patient": "county-1.p7", "items": ["GLU"], "time": on(-1, "09:00:00")})
            assert r.status_code == 200, r.text
            return [x["result"] for x in r.json()["items"][0]["recognisable"]]

        async def on_file() -> bool:
            return await recognisable() == ["township-1.g1"]

        await eventually(on_file)

        def prompt_of(request_id: str) -> str | None:
            with hub.store.connect() as conn:
                return conn.execute(sa.select(recognition_prompts.c.status).where(
                    recognition_prompts.c.request_id == request_id)).scalar()

        async def prompted(request_id: str, status: str) -> bool:
            return await asyncio.to_thread(prompt_of, request_id) == status

        def order(oid: str) -> dict:
            return {"resourceType": "ServiceRequest", "id": oid, "status": "active",
                    "intent": "order", "authoredOn": on(-1, "09:00:00"),
                    "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                    "subject": {"reference": "Patient/p7"}}

        await put_resource(base, COUNTY, order("o1"))
        await eventually(lambda: prompted("county-1.o1", "open"))

        await opt_out(base, TOWNSHIP, "township-1", "p1", keeps_out("county-1"))
        assert await recognisable() == []
        await put_resource(base, COUNTY, order("o2"))
        await eventually(lambda: prompted("county-1.o2", "none"))
        await eventually(lambda: prompted("county-1.o1", "withdrawn"))
        msgs = await read_json_topic(settings, settings.topics.recognition, 2)
        assert [m["type"] for m in msgs] == ["hie.recognition.prompt.v1",
                                            "hie.recognition.withdrawn.v1"]
