"""The master patient index end to end: records from several facilities are linked as they
arrive, the review queue takes the doubtful ones, people confirm, reject, unlink and merge
over the API, the read API follows every decision, and a rebuild of the index from the
journal gives the same views as live processing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from hub.cli import app
from hub.demo.population import gb11643_check
from hub.engine.rebuild import rebuild
from hub.mpi.projection import MpiProjection
from hub.mpi.service import linked_records
from tests.support.events import envelope, publish
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.resources import observation

pytestmark = [pytest.mark.e2e, pytest.mark.contract]

BODY = "33040219600305123"
NATIONAL_ID = BODY + gb11643_check(BODY)


def resident(pid: str, name: str, birth: str, sex: str = "male", national_id: str | None = None,
             phone: str | None = None, address: str | None = None) -> dict:
    res = {"resourceType": "Patient", "id": pid,
           "identifier": [{"system": "urn:hie:facility:x:mrn", "value": f"MRN-{pid}"}],
           "name": [{"text": name, "family": name[0], "given": [name[1:]]}],
           "gender": sex, "birthDate": birth}
    if national_id:
        res["identifier"].append({"system": "urn:oid:2.16.156.10011.1.1",
                                  "value": national_id})
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        res["address"] = [{"text": address}]
    return res


PEOPLE = {
    # facility, record: the same resident 张伟 at three facilities ...
    ("township-1", "p1"): resident("p1", "张伟", "1960-03-05", national_id=NATIONAL_ID,
                                   phone="13905730001",
                                   address="浙江省嘉兴市南湖区建设街道中山路12号"),
    ("county-1", "p7"): resident("p7", "张伟", "1960-03-05", national_id=NATIONAL_ID),
    ("city-1", "p3"): resident("p3", "张伟", "1960-03-05", phone="13905730001",
                               address="嘉兴南湖中山路12号"),
    # ... the same ID keyed with the wrong sex: flagged, never linked ...
    ("village-1", "p4"): resident("p4", "张伟", "1960-03-05", sex="female",
                                  national_id=NATIONAL_ID),
    # ... a homophone typo with day and month swapped and nothing else: the grey zone ...
    ("community-1", "p5"): resident("p5", "章伟", "1960-05-03"),
    # ... and a different resident.
    ("township-2", "p9"): resident("p9", "李娜", "1985-11-20", sex="female"),
}


async def views(client: httpx.AsyncClient, store) -> dict[str, tuple]:
    """What a reader sees for each record: its person's records and its observations."""
    out = {}
    for fid, pid in PEOPLE:
        key = f"{fid}.{pid}"
        obs = (await client.get("/fhir/Observation", params={"patient": key})).json()
        out[key] = (tuple(await asyncio.to_thread(linked_records, store, key)),
                    tuple(sorted(e["resource"]["id"] for e in obs["entry"])))
    return out


async def test_index_links_reviews_and_follows_decisions(make_settings):
    settings = make_settings(mpi_poll_seconds=0.1)
    await publish(settings, [envelope(res, fid) for (fid, _), res in PEOPLE.items()]
                  + [envelope(observation(f"o-{pid}", pid=pid), fid) for fid, pid in PEOPLE])
    async with running_hub(settings) as (hub, base), \
            httpx.AsyncClient(base_url=base, headers=auth("demo-secret-county-1")) as county:
        store = hub.store

        async def linked(key: str, expected: set[str]) -> bool:
            return set(await asyncio.to_thread(linked_records, store, key)) == expected

        same = {"township-1.p1", "county-1.p7", "city-1.p3"}
        await eventually(lambda: linked("township-1.p1", same))

        async def followed() -> bool:  # the shared record has its own runner
            obs = (await county.get("/fhir/Observation",
                                    params={"patient": "Patient/county-1.p7"})).json()
            return {e["resource"]["id"] for e in obs.get("entry", [])} == {
                "township-1.o-p1", "county-1.o-p7", "city-1.o-p3"}

        await eventually(followed)

        async def queued() -> list[dict]:
            return (await county.get("/mpi/reviews")).json()["reviews"]

        await eventually(lambda: _has(queued, 2))
        by_record = {r["record"]: r for r in await queued()}
        conflict, review = by_record["village-1.p4"], by_record["community-1.p5"]
        assert conflict["kind"] == "conflict" and "sex differs" in " ".join(conflict["reasons"])
        assert review["kind"] == "review" and review["candidate_record"] in same
        assert await linked("village-1.p4", {"village-1.p4"})  # flagged, never merged

        # The national ID is never kept in clear, not even in the shared record.
        async def recorded() -> bool:
            return (await county.get("/fhir/Patient/township-1.p1")).status_code == 200

        await eventually(recorded)
        patient = (await county.get("/fhir/Patient/township-1.p1")).json()
        assert NATIONAL_ID not in str(patient)
        assert any(i["system"] == "urn:hie:keyed-hash:national-id"
                   for i in patient["identifier"])

        ok = await county.post(f"/mpi/reviews/{review['id']}/confirm")
        assert ok.status_code == 200, ok.text
        assert set(ok.json()["records"]) == same | {"community-1.p5"}
        # A 200 is a durable yes (bundled broker): the closed review is journaled already.
        with store.connect() as conn:
            closed = conn.execute(sa.text(
                "SELECT COUNT(*) FROM hub_journal WHERE subject = :s"),
                {"s": f"Task/{review['id'].split('.', 1)[-1]}"}).scalar_one()
        assert closed >= 2  # the review's opening and its closing
        # The operator's way: `hub mpi` against the running hub.
        token = ("--url", base, "--token", "demo-secret-county-1")
        listed = await asyncio.to_thread(cli, "mpi", "reviews", *token)
        assert "village-1.p4" in listed and "conflict" in listed
        rejected = await asyncio.to_thread(cli, "mpi", "reject", conflict["id"], *token)
        assert "village-1.p4 belongs with: village-1.p4" in rejected
        again = await county.post(f"/mpi/reviews/{conflict['id']}/reject")
        assert again.status_code == 409 and "already rejected" in again.text
        assert await queued() == []

        # Unlink splits the record back out; merge brings it back.
        split = await county.post("/mpi/unlink", json={"record": "city-1.p3"})
        assert split.json()["records"] == ["city-1.p3"]
        obs = (await county.get("/fhir/Observation", params={"patient": "township-1.p1"})
               ).json()
        assert "city-1.o-p3" not in {e["resource"]["id"] for e in obs["entry"]}
        merged = await county.post("/mpi/merge", json={"survivor": "township-1.p1",
                                                        "merged": "city-1.p3"})
        assert "city-1.p3" in merged.json()["records"]
        bad = await county.post("/mpi/merge", json={"survivor": "township-1.p1",
                                                     "merged": "nowhere.p0"})
        assert bad.status_code == 409 and "not in the index" in bad.text

        async with httpx.AsyncClient(base_url=base, headers=auth(
                "demo-app-token-chronic-dashboard")) as app:
            assert (await app.get("/mpi/reviews")).status_code == 403

        # The audit trail follows the links too: reads of the other records show up.
        trail = (await county.get("/fhir/AuditEvent", params={
            "patient": "county-1.p7", "_count": 500})).json()
        seen = {e["resource"]["entity"][0]["what"]["reference"] for e in trail["entry"]}
        assert {"Patient/township-1.p1", "Patient/city-1.p3", "Patient/county-1.p7"} <= seen

        live = await views(county, store)
        assert live["township-2.p9"][0] == ("township-2.p9",)

        async def journal_complete() -> bool:
            import sqlalchemy as sa

            with store.connect() as conn:
                n = conn.execute(sa.text("SELECT COUNT(*) FROM hub_journal "
                                         "WHERE type LIKE 'fhir.Person%'")).scalar_one()
                m = conn.execute(sa.text("SELECT COUNT(*) FROM mpi_person")).scalar_one()
            return n > 0 and n >= m

        await eventually(journal_complete)
        await asyncio.sleep(1.0)
        hub.mpi.stop()
        await asyncio.to_thread(rebuild, store, MpiProjection())
        assert await views(county, store) == live


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False,
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


async def _has(fetch, n: int) -> bool:
    return len(await fetch()) >= n
