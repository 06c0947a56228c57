"""Bulk export and consent through a running hub: the FHIR Bulk Data kick-off, polling and
download (over HTTP, as a bulk client speaks it; writes and reads with fhirpy), the
de-identified variant, and a patient's consent honoured by reads, searches and exports,
with every refusal in the audit trail."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from email.utils import parsedate_to_datetime

import httpx
import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError

from hub import clock
from hub.consent.rules import APP_SYSTEM
from tests.support.hub_server import auth, eventually, put_resource, running_hub, status_of
from tests.support.resources import consent, consent_actor, observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
TOWNSHIP = "demo-secret-township-1"
CITY = "demo-secret-city-1"
COUNTY = "demo-secret-county-1"
DATA_CENTRE = "demo-app-token-data-centre"  # identified exports, every facility
RESEARCH = "demo-app-token-research"  # de-identified exports only
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
ZHANG = {"name": [{"text": "张伟", "family": "张", "given": ["伟"]}], "gender": "male",
         "birthDate": "1971-06-15"}


async def _fill(base: str, deny: dict) -> None:
    """Two residents at township-1, each with a glucose result; the second has opted out
    (``deny``)."""
    client = AsyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {TOWNSHIP}")
    await client.resource("Patient", **patient("p1")).save()
    await client.resource("Patient", **{**patient("p2", mrn="MRN2"), **ZHANG}).save()
    await client.resource("Observation", **observation("o1", pid="p1")).save()
    await client.resource("Observation", **observation("o2", pid="p2", value=9.3)).save()
    await client.resource("Consent", **consent(deny, cid="c2", pid="p2")).save()
    async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:

        async def all_there() -> bool:
            return all([await status_of(c, p) == 200 for p in (
                "/fhir/Observation/township-1.o1", "/fhir/Observation/township-1.o2",
                "/fhir/Consent/township-1.c2")])

        await eventually(all_there)


async def _export(c: httpx.AsyncClient, path: str, **params) -> dict:
    """Kick off, poll to the end, and return the manifest."""
    r = await c.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    status = r.headers["Content-Location"]
    for _ in range(300):
        r = await c.get(status)
        if r.status_code == 200:
            # Bulk Data: a finished export says until when its files can be fetched.
            expires = parsedate_to_datetime(r.headers["Expires"])
            assert timedelta(hours=23) < expires - clock.now() <= timedelta(hours=24)
            return r.json()
        assert r.status_code == 202, r.text
        assert "X-Progress" in r.headers
        await asyncio.sleep(0.1)
    raise AssertionError("the export did not finish")


async def _files(c: httpx.AsyncClient, manifest: dict) -> dict[str, list[dict]]:
    out = {}
    for o in manifest["output"]:
        r = await c.get(o["url"])
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        out[o["type"]] = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(out[o["type"]]) == o["count"]
    return out


async def _trail(base: str, key: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
        trail = (await c.get("/fhir/AuditEvent", params={"patient": key,
                                                         "_count": 500})).json()
    events = [e["resource"] for e in trail["entry"]]
    for e in events:
        AuditEvent.model_validate(e)
    return events


async def test_bulk_export_kick_off_poll_download_and_consent(make_settings):
    async with running_hub(make_settings()) as (_, base):
        # p2 keeps the data centre out, but not research.
        await _fill(base, {"type": "deny", "actor": [consent_actor(APP_SYSTEM, "data-centre")]})
        async with httpx.AsyncClient(base_url=base, headers=auth(DATA_CENTRE)) as dc, \
                httpx.AsyncClient(base_url=base, headers=auth(RESEARCH)) as research, \
                httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as township:
            manifest = await _export(dc, "/fhir/$export", _type="Patient,Observation")
            assert manifest["requiresAccessToken"] is True
            assert manifest["request"].endswith("_type=Patient%2CObservation")
            files = await _files(dc, manifest)
            assert {p["id"] for p in files["Patient"]} == {"township-1.p1"}
            assert [o["id"] for o in files["Observation"]] == ["township-1.o1"]
            assert files["Patient"][0]["name"][0]["text"] == "王秀英"  # identified

            # The job is its owner's: another reader, or no token, cannot see it.
            status = manifest["output"][0]["url"].rsplit("/", 1)[0]
            assert (await research.get(status)).status_code == 404
            assert (await research.get(manifest["output"][0]["url"])).status_code == 404
            assert (await httpx.AsyncClient().get(status)).status_code == 401

            # Audited: the exported patient as read, the opted-out one as refused by consent.
            p1 = [e for e in await _trail(base, "township-1.p1")
                  if e["agent"][0]["who"]["identifier"]["value"] == "data-centre"]
            assert [(e["subtype"][0]["code"], e["outcome"]) for e in p1] == [("operation", "0")]
            p2 = [e for e in await _trail(base, "township-1.p2")
                  if e["agent"][0]["who"]["identifier"]["value"] == "data-centre"]
            assert [e["outcome"] for e in p2] == ["4"]
            assert "Consent/township-1.c2" in p2[0]["outcomeDesc"]

            # De-identified, for research: both residents, no names or ids, dates shifted.
            assert (await research.get("/fhir/$export", headers=ASYNC)).status_code == 403
            manifest = await _export(research, "/fhir/Patient/$export", _deidentify="true")
            assert manifest["extension"] == {"urn:hie:deidentified": True}
            files = await _files(research, manifest)
            text = orjson.dumps(files).decode()
            for word in ("王秀英", "张伟", "MRN1", "township-1.p1", "township-1.o2"):
                assert word not in text
            assert len(files["Patient"]) == 2 and len(files["Observation"]) == 2
            born = {p["id"]: date.fromisoformat(p["birthDate"]) for p in files["Patient"]}
            assert set(born.values()).isdisjoint({date(1958, 3, 2), date(1971, 6, 15)})
            for o in files["Observation"]:
                pid = o["subject"]["reference"].split("/")[1]
                taken = date.fromisoformat(o["effectiveDateTime"][:10])
                truth = date(2026, 11, 1) - (date(1958, 3, 2) if o["valueQuantity"]["value"]
                                             == 6.1 else date(1971, 6, 15))
                assert taken - born[pid] == truth  # one shift per patient: intervals hold
            assert any(e["agent"][0]["who"]["identifier"]["value"] == "research"
                       and "_deidentify=true" in e["entity"][1]["description"]
                       for e in await _trail(base, "township-1.p2"))

            # A facility exports its own patients; groups are registry groups or tiers.
            mine = await _files(township, await _export(township, "/fhir/Patient/$export"))
            assert {p["id"] for p in mine["Patient"]} == {"township-1.p1", "township-1.p2"}
            assert "Consent" in mine  # its own record, whatever the consent says of others
            tier = await _export(dc, "/fhir/Group/tier-township-centre/$export",
                                 _type="Observation")
            assert [o["count"] for o in tier["output"]] == [1]
            city = await _export(dc, "/fhir/Group/city-group/$export")
            assert city["output"] == []
            late = await _export(dc, "/fhir/$export", _since="2999-01-01T00:00:00Z")
            assert late["output"] == []

            # Bad kick-offs are OperationOutcomes naming the problem.
            for path, params, headers, status_code, words in [
                    ("/fhir/$export", {}, {}, 400, "Prefer: respond-async"),
                    ("/fhir/$export", {"_type": "Foo"}, ASYNC, 400, "Foo"),
                    ("/fhir/$export", {"_since": "yesterday"}, ASYNC, 400, "_since"),
                    ("/fhir/$export", {"_typeFilter": "x"}, ASYNC, 400, "_typeFilter"),
                    ("/fhir/Group/nowhere/$export", {}, ASYNC, 404, "nowhere")]:
                r = await dc.get(path, params=params, headers=headers)
                assert r.status_code == status_code, (path, r.text)
                assert words in r.json()["issue"][0]["diagnostics"]
            async with httpx.AsyncClient(base_url=base,
                                         headers=auth("demo-app-token-chronic-dashboard")
                                         ) as dashboard:
                assert (await dashboard.get("/fhir/$export", headers=ASYNC)).status_code == 403

            # The CapabilityStatement says so: Consent is served, $export is an operation.
            cs = (await dc.get("/fhir/metadata")).json()["rest"][0]
            assert "Consent" in {r["type"] for r in cs["resource"]}
            assert {o["definition"].rsplit("/", 1)[1] for o in cs["operation"]} == {
                "export", "group-export"}
            patient_ops = next(r for r in cs["resource"] if r["type"] == "Patient")["operation"]
            assert "export" in {o["name"] for o in patient_ops}

            # DELETE removes a finished export's files.
            r = await dc.get("/fhir/$export", headers=ASYNC)
            status = r.headers["Content-Location"]
            assert (await dc.delete(status)).status_code == 202
            await eventually(lambda: _gone(dc, status))


async def _gone(c: httpx.AsyncClient, url: str) -> bool:
    return (await c.get(url)).status_code == 404


async def test_consent_refuses_reads_and_searches_with_an_audited_403(make_settings):
    async with running_hub(make_settings()) as (_, base):
        # p2 opted out of sharing with city-1 (named as an Organization).
        await _fill(base, {"type": "deny", "actor": [consent_actor(None, "city-1")]})
        city = AsyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {CITY}")
        with pytest.raises(ForbiddenError, match="a consent rule applied"):
            await city.reference("Observation", "township-1.o2").to_resource()
        with pytest.raises(ForbiddenError, match=r"Consent/township-1\.c2"):
            await city.resources("Observation").search(patient="township-1.p2").fetch_all()
        everything = await city.resources("Observation").fetch_all()
        assert {o["id"] for o in everything} >= {"township-1.o1"}
        assert "township-1.o2" not in {o["id"] for o in everything}
        # So does a lab search without a patient (the lab projection's own table).
        async with httpx.AsyncClient(base_url=base, headers=auth(CITY)) as c, \
                httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as t:

            async def lab_ids(client: httpx.AsyncClient) -> set[str]:
                found = (await client.get("/fhir/Observation",
                                          params={"code": "2339-0"})).json()
                assert found["total"] == len(found["entry"])
                return {e["resource"]["id"] for e in found["entry"]}

            async def lab_has_both() -> bool:  # as the facility holding them sees it
                return {"township-1.o1", "township-1.o2"} <= await lab_ids(t)

            await eventually(lab_has_both)
            assert "township-1.o1" in await lab_ids(c)
            assert "township-1.o2" not in await lab_ids(c)
        # Others, and the facility holding the record, still read it.
        for token in (COUNTY, TOWNSHIP):
            other = AsyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {token}")
            assert (await other.reference("Observation", "township-1.o2").to_resource()
                    )["valueQuantity"]["value"] == 9.3
        refused = [e for e in await _trail(base, "township-1.p2")
                   if e["agent"][0]["who"]["identifier"]["value"] == "city-1"]
        assert {(e["subtype"][0]["code"], e["outcome"]) for e in refused} == {
            ("read", "4"), ("search-type", "4")}
        assert all("a consent rule applied (Consent/township-1.c2)" in e["outcomeDesc"]
                   for e in refused)
        # Withdrawn (deleted), the consent no longer applies.
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
            assert (await c.delete("/fhir/Consent/c2")).status_code in (200, 204)
        async with httpx.AsyncClient(base_url=base, headers=auth(CITY)) as c:

            async def readable() -> bool:
                return await status_of(c, "/fhir/Observation/township-1.o2") == 200

            await eventually(readable)


async def test_the_referral_package_honours_consent(make_settings):
    from tests.e2e.test_referral import referral

    async with running_hub(make_settings()) as (_, base):
        # p2 keeps county hospitals out of its record, for treatment too.
        await _fill(base, {"type": "deny", "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
            "actor": [consent_actor("urn:hie:tier", "county-hospital")]})
        await put_resource(base, TOWNSHIP, referral("sr2", "p2", "cardiology", "stat"))
        async with httpx.AsyncClient(base_url=base, headers=auth(COUNTY)) as county, \
                httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as township:

            async def arrived() -> bool:
                return (await county.get("/referrals/incoming")).json()["count"] == 1

            await eventually(arrived)
            assert (await county.post("/referrals/township-1.sr2/accept",
                                      json={})).status_code == 200
            refused = await county.get("/referrals/township-1.sr2/package")
            assert refused.status_code == 403
            assert "a consent rule applied" in refused.json()["issue"][0]["diagnostics"]
            # The sender holds the record: its package is whole.
            mine = await township.get("/referrals/township-1.sr2/package")
            assert mine.status_code == 200 and mine.json()["lab"]
        trail = await _trail(base, "township-1.p2")
        assert any(e["outcome"] == "4" and "package" in e["entity"][1]["description"]
                   and "Consent/township-1.c2" in e["outcomeDesc"] for e in trail)
