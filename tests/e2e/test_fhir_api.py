"""The gateway and read API through real HTTP, with a real FHIR client (fhirpy)."""

from __future__ import annotations

import httpx
import orjson
import pytest
from fhirpy import AsyncFHIRClient

from hub.deadletters.read import get_dead_letter, list_dead_letters
from hub.log.inspect import read_deadletters
from tests.support.hub_server import auth, eventually, running_hub, status_of
from tests.support.resources import bundle, observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
TOWNSHIP = "demo-secret-township-1"


async def test_fhir_client_writes_and_searches(make_settings):
    async with running_hub(make_settings()) as (_, base):
        client = AsyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {TOWNSHIP}")
        await client.resource("Patient", **patient("p1")).save()
        for i in range(7):
            await client.resource("Observation", **observation(f"o{i}", value=5 + i)).save()

        async def all_there() -> bool:
            found = await client.resources("Observation").search(
                patient="Patient/township-1.p1").fetch_all()
            return len(found) == 7

        await eventually(all_there)
        page = await client.resources("Observation").search(
            patient="township-1.p1").limit(3).fetch()
        assert len(page) == 3
        everything = await client.resources("Observation").search(
            patient="township-1.p1").limit(3).fetch_all()  # follows the next links
        assert sorted(o["id"] for o in everything) == [f"township-1.o{i}" for i in range(7)]
        assert everything[0]["subject"]["reference"] == "Patient/township-1.p1"
        assert everything[0]["meta"]["source"] == "urn:hie:facility:township-1"
        p = await client.reference("Patient", "township-1.p1").to_resource()
        assert p["name"][0]["text"] == "王秀英"
        # another facility reads the shared record too
        other = AsyncFHIRClient(f"{base}/fhir", authorization="Bearer demo-secret-city-1")
        assert len(await other.resources("Observation").search(
            patient="township-1.p1").fetch_all()) == 7


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
async def test_bad_input_is_refused_clearly_and_loses_nothing(make_settings, workers):
    settings = make_settings(max_body_bytes=8 * 1024 * 1024, validation_workers=workers)
    async with running_hub(settings) as (hub, base):
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP), timeout=60) as c:
            assert (await c.put("/fhir/Patient/keep", json=patient("keep"))).status_code == 201

            async def visible(path: str) -> bool:
                return await status_of(c, path) == 200

            await eventually(lambda: visible("/fhir/Patient/township-1.keep"))

            async def refused(resp: httpx.Response, status: int, words: str) -> dict:
                assert resp.status_code == status, resp.text
                oo = resp.json()
                assert oo["resourceType"] == "OperationOutcome"
                assert any(words in i["diagnostics"] for i in oo["issue"]), oo
                return oo

            fhir_json = {"Content-Type": "application/fhir+json"}
            await refused(await c.post("/fhir", content=b'{"resourceType": "Bundle",',
                                       headers=fhir_json), 400, "not valid JSON")
            await refused(await c.post("/fhir/Observation", json=patient("x")), 400,
                          "resourceType is Patient but the URL names Observation")
            oo = await refused(await c.post("/fhir/Observation", json={
                "resourceType": "Observation", "valueString": "high"}), 422, "required")
            where = {e for i in oo["issue"] for e in i["expression"]}
            assert {"Observation.status", "Observation.code", "Observation.subject",
                    "Observation.effective[x]"} <= where
            await refused(await c.post("/fhir", json=bundle("batch"), headers=auth("nope")),
                          401, "unknown facility credential")
            await refused(await c.post("/fhir", json=bundle("batch"),
                                       headers={"Authorization": ""}), 401, "no credential")
            await refused(await c.post("/fhir", content=b"x" * (10 * 1024 * 1024),
                                       headers=fhir_json), 413, "larger than the limit")
            await refused(await c.post("/fhir", content=b"x"), 415, "no Content-Type")
            await refused(await c.post("/fhir", json=bundle("batch")), 400, "no entries")

            bad = {"resourceType": "Observation", "id": "bad", "status": "final"}
            tx = await c.post("/fhir", json=bundle("transaction", patient("t1"), bad))
            oo = await refused(tx, 400, "required")
            assert any(e.startswith("Bundle.entry[1].resource.Observation")
                       for i in oo["issue"] for e in i["expression"])

            mixed = await c.post("/fhir", json=bundle("batch", patient("b1"), bad,
                                                      observation("b2", pid="b1")))
            assert mixed.status_code == 200
            statuses = [e["response"]["status"] for e in mixed.json()["entry"]]
            assert statuses == ["201 Created", "400 Bad Request", "201 Created"]

            await eventually(lambda: visible("/fhir/Observation/township-1.b2"))
            assert await status_of(c, "/fhir/Patient/township-1.b1") == 200
            # the transaction was all-or-nothing: its valid Patient was not appended
            assert await status_of(c, "/fhir/Patient/township-1.t1") == 404
            assert await status_of(c, "/fhir/Observation/township-1.bad") == 404
            assert await status_of(c, "/fhir/Patient/township-1.keep") == 200

            # kept in SQL before each answer, byte for byte (the 413's body excepted)
            kept = {r.reason: r for r in list_dead_letters(hub.store)}
            assert get_dead_letter(hub.store, kept["invalid-json"].id).original == (
                b'{"resourceType": "Bundle",')
            assert get_dead_letter(hub.store, kept["too-large"].id).original == b""

        async def fed() -> bool:  # the topic copy follows the SQL row
            return len(await read_deadletters(settings, 50)) == 8

        await eventually(fed)
        dead = await read_deadletters(settings, 50)
        reasons = [d["reason"].split(":")[0] for d in dead]
        for reason in ("invalid-json", "invalid-resource", "too-large", "invalid-bundle",
                       "invalid-transaction", "invalid-entry", "unsupported-media-type"):
            assert reason in reasons, reasons
        entry = next(d for d in dead if d["reason"].startswith("invalid-entry"))
        assert orjson.loads(entry["value"])["resource"]["id"] == "bad"
        assert orjson.loads(entry["outcome"])["resourceType"] == "OperationOutcome"


async def test_delete_and_read_errors(make_settings):
    async with running_hub(make_settings()) as (_, base):
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
            await c.put("/fhir/Patient/d1", json=patient("d1"))

            async def present() -> bool:
                return await status_of(c, "/fhir/Patient/township-1.d1") == 200

            await eventually(present)
            assert (await c.delete("/fhir/Patient/d1")).status_code == 200

            async def gone() -> bool:
                return await status_of(c, "/fhir/Patient/township-1.d1") == 410

            await eventually(gone)
            r = await c.get("/fhir/Observation", params={"value-quantity": "5"})
            assert r.status_code == 400 and "unsupported search parameter" in r.text
            r = await c.get("/fhir/Observation/none")
            assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
            assert (await c.delete("/fhir/Patient/never")).status_code == 404
            meta = await c.get("/fhir/metadata")
            assert meta.json()["resourceType"] == "CapabilityStatement"
        async with httpx.AsyncClient(base_url=base) as anonymous:
            r = await anonymous.get("/fhir/Patient/township-1.d1")
            assert r.status_code == 401 and r.json()["issue"][0]["code"] == "login"


async def test_hl7_examples_through_http_exactly_as_sent(make_settings):
    """HL7's decimal example (with the subject and time the profile asks for), sent with a
    byte-order mark, is served with every number as written; a versioned deletion hides
    it; a type the hub does not serve is refused and a search of it is a 404."""
    from pathlib import Path

    fhir = Path(__file__).parents[2] / "samples" / "fhir"
    dec = (fhir / "Observation-decimal.json").read_bytes().replace(
        b'"status": "final",', b'"status": "final", "subject": {"reference": "Patient/p1"}, '
        b'"effectiveDateTime": "2026-11-30", "meta": {"versionId": "2"},', 1)
    fhir_json = {"Content-Type": "application/fhir+json"}
    async with running_hub(make_settings()) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
        r = await c.put("/fhir/Observation/decimal", content=b"\xef\xbb\xbf" + dec,
                        headers=fhir_json)
        assert r.status_code == 201, r.text
        # a late version 1 arrives after version 2
        old = dec.replace(b'"versionId": "2"', b'"versionId": "1"').replace(b"1.00", b"7")
        assert (await c.put("/fhir/Observation/decimal", content=old,
                            headers=fhir_json)).status_code == 201

        async def served() -> bool:
            return await status_of(c, "/fhir/Observation/township-1.decimal") == 200

        await eventually(served)
        body = (await c.get("/fhir/Observation/township-1.decimal")).content
        for literal in (b"1.00", b"1E-22", b"1.000000000000000000E-245",
                        b"-1.000000000000000000E+245"):
            assert b'"value":' + literal + b"," in body, body
        q = await c.put("/fhir/Questionnaire/q", json={"resourceType": "Questionnaire",
                                                        "id": "q", "status": "draft"})
        assert q.status_code == 400 and "not a resource type this hub" in q.text
        assert (await c.get("/fhir/Questionnaire")).status_code == 404
        assert (await c.get("/fhir/Questionnaire/q")).status_code == 404
        cs = (await c.get("/fhir/metadata")).json()
        assert "Questionnaire" not in {r["type"] for r in cs["rest"][0]["resource"]}


async def test_conditional_interactions_and_urn_uuid_transactions(make_settings):
    """Conditional create (If-None-Exist), conditional update (PUT Type?identifier=),
    If-Match, and a transaction whose entries refer to each other by urn:uuid, on HL7's
    example Patient and Observation."""
    from pathlib import Path

    fhir = Path(__file__).parents[2] / "samples" / "fhir"
    pat = orjson.loads((fhir / "Patient-example.json").read_bytes())
    system, value = pat["identifier"][0]["system"], pat["identifier"][0]["value"]
    criteria = f"identifier={system}|{value}"
    new = {k: v for k, v in pat.items() if k != "id"}
    async with running_hub(make_settings()) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
        first = await c.post("/fhir/Patient", json=new, headers={"If-None-Exist": criteria})
        assert first.status_code == 201, first.text
        location = first.headers["Location"]

        async def visible() -> bool:
            return await status_of(c, location) == 200

        await eventually(visible)
        again = await c.post("/fhir/Patient", json=new, headers={"If-None-Exist": criteria})
        assert (again.status_code, again.headers["Location"]) == (200, location)
        local = location.rsplit(".", 1)[-1]
        updated = await c.put(f"/fhir/Patient?{criteria}", json={**new, "gender": "other"})
        assert updated.status_code == 201 and updated.json()["id"] == local
        stale = await c.put(f"/fhir/Patient/{local}", json={**new, "id": local},
                            headers={"If-Match": 'W/"7"'})
        assert stale.status_code == 412
        assert stale.json()["issue"][0]["expression"] == ["(If-Match)"]
        vague = await c.put("/fhir/Patient?name=peter", json=new)
        assert vague.status_code == 422 and "identifier=system|value only" in vague.text

        obs = orjson.loads((fhir / "Observation-glasgow.json").read_bytes())
        del obs["id"]
        obs["subject"] = {"reference": "urn:uuid:7d8a0c54-0000-4000-8000-000000000001"}
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:7d8a0c54-0000-4000-8000-000000000002", "resource": obs,
             "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": "urn:uuid:7d8a0c54-0000-4000-8000-000000000001",
             "resource": {**new, "identifier": [{"system": system, "value": "tx-1"}]},
             "request": {"method": "POST", "url": "Patient"}}]}
        answer = await c.post("/fhir", json=tx)
        assert answer.status_code == 200, answer.text
        obs_at, pat_at = (e["response"]["location"] for e in answer.json()["entry"])

        async def stored() -> bool:
            return await status_of(c, f"/fhir/{obs_at}") == 200

        await eventually(stored)
        read = (await c.get(f"/fhir/{obs_at}")).json()
        assert read["subject"]["reference"] == pat_at  # Patient/township-1.<its new id>
