"""Dead letters kept in SQL: refused at the gateway, read back through the API (operators,
facilities, apps) and through `hub deadletters` once the hub and any broker are gone."""

from __future__ import annotations

import asyncio
import os

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from hub.cli import app
from hub.deadletters.letter import refuse
from hub.deadletters.read import count, list_dead_letters, make_filter
from hub.log.producer import Publisher
from hub.store.schema import dead_letters
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.proc import hub
from tests.support.resources import bundle, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
TOWNSHIP, CITY = "demo-secret-township-1", "demo-secret-city-1"
OPS = "demo-app-token-consortium-ops"  # the demo consortium's operators' console
APP = "demo-app-token-chronic-dashboard"  # an app without the deadletters scope
BAD_JSON = b'{"resourceType": "Observation", "id": "o1", \xff\xfe'
FHIR_JSON = {"content-type": "application/fhir+json"}


def cli(*args: str, db: str) -> tuple[int, str]:
    # No broker anywhere: the command must need none.
    env = {"HUB_DATABASE_URL": db, "HUB_KAFKA_BOOTSTRAP": "127.0.0.1:1", "COLUMNS": "250"}
    done = CliRunner().invoke(app, ["deadletters", *args], env=env)
    return done.exit_code, done.output


async def test_refusals_are_kept_in_sql_and_read_back(make_settings, store_url, tmp_path):
    settings = make_settings(database_url=store_url)
    async with running_hub(settings) as (running, base):
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
            r = await c.put("/fhir/Observation/o1", content=BAD_JSON,
                            headers={"content-type": "application/fhir+json"})
            assert r.status_code == 400
            r = await c.post("/fhir/Observation", json={
                "resourceType": "Observation", "subject": {"reference": "Patient/p1"}})
            assert r.status_code == 422
            bad = {"resourceType": "Observation", "id": "bad", "status": "final",
                   "subject": {"reference": "Patient/p2"}}
            r = await c.post("/fhir", json=bundle("transaction", patient("t1"), bad))
            assert r.status_code == 400
            r = await c.post("/fhir", json=bundle("batch", patient("b1"), bad))
            assert [e["response"]["status"] for e in r.json()["entry"]] == [
                "201 Created", "400 Bad Request"]
        async with httpx.AsyncClient(base_url=base, headers=auth(CITY)) as c:
            nope = await c.post("/fhir/Patient", content=b"nope", headers=FHIR_JSON)
            assert nope.status_code == 400
        # every refusal is in SQL by the time it was answered
        assert count(running.store, make_filter()) == 5

        async with httpx.AsyncClient(base_url=base, headers=auth(OPS)) as ops:
            listing = (await ops.get("/deadletters")).json()
            assert listing["total"] == 5
            assert [d["reason"] for d in listing["deadletters"]] == [
                "invalid-json", "invalid-entry", "invalid-transaction", "invalid-resource",
                "invalid-json"]  # newest first
            assert {d["entry"] for d in listing["deadletters"]} == {"gateway"}

            async def get(**params) -> list[dict]:
                r = await ops.get("/deadletters", params=params)
                assert r.status_code == 200, r.text
                return r.json()["deadletters"]

            [mine] = await get(reason="invalid-json", facility="township-1")
            [city] = await get(facility="city-1")
            [entry] = await get(reason="invalid-entry")
            [invalid] = await get(reason="invalid-resource")
            assert (entry["subject"], entry["patient_key"]) == ("Observation/bad",
                                                                "township-1.p2")
            assert invalid["patient_key"] == "township-1.p1" and invalid["subject"] is None
            assert len(await get(since="1h", until="2099-01-01")) == 5
            assert await get(until="2000-01-01") == []
            assert await get(event_id="no-such-event") == []
            assert len(await get(_count="2")) == 2

            original = await ops.get(f"/deadletters/{mine['id']}/original")
            assert original.status_code == 200 and original.content == BAD_JSON
            assert original.headers["content-type"] == "application/octet-stream"
            one = (await ops.get(f"/deadletters/{mine['id']}")).json()
            assert one["outcome"]["resourceType"] == "OperationOutcome"
            assert ["http_request", "PUT /fhir/Observation/o1"] in one["headers"]
            assert one["subject"] == "Observation/o1" and one["size"] == len(BAD_JSON)
            entry_bytes = (await ops.get(f"/deadletters/{entry['id']}/original")).content
            assert orjson.loads(entry_bytes)["resource"] == bad

            for nonsense in ({"_count": "9223372036854775808"}, {"_count": "-1"},
                             {"_offset": str(10**12)}, {"since": "yesterday"},
                             {"colour": "red"}):
                r = await ops.get("/deadletters", params=nonsense)
                assert r.status_code == 400, (nonsense, r.text)
                assert r.json()["resourceType"] == "OperationOutcome"
            assert (await ops.get("/deadletters/nope")).status_code == 404

            async def fed() -> bool:  # the topic copy follows the SQL row
                return all(d["published"] for d in await get())

            await eventually(fed)

        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as t1:
            own = (await t1.get("/deadletters")).json()
            assert own["total"] == 4 and {d["facility"] for d in own["deadletters"]} == {
                "township-1"}
            assert (await t1.get("/deadletters", params={"facility": "city-1"})
                    ).status_code == 403
            assert (await t1.get(f"/deadletters/{city['id']}")).status_code == 403
            assert (await t1.get(f"/deadletters/{city['id']}/original")).status_code == 403
            assert (await t1.get(f"/deadletters/{mine['id']}/original")).content == BAD_JSON
            # the operators' reads of a letter about a patient are in that patient's trail
            trail = (await t1.get("/fhir/AuditEvent",
                                  params={"patient": "township-1.p2"})).json()
            whats = {(e["resource"]["agent"][0]["who"]["identifier"]["value"],
                      e["resource"]["entity"][-1].get("description"))
                     for e in trail["entry"]}
            assert ("consortium-ops", f"/deadletters/{entry['id']}/original") in whats
        async with httpx.AsyncClient(base_url=base, headers=auth(APP)) as dashboard:
            r = await dashboard.get("/deadletters")
            assert r.status_code == 403 and "deadletters" in r.text
            assert (await dashboard.get(f"/deadletters/{mine['id']}")).status_code == 403
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/deadletters")).status_code == 401

    # The hub is stopped and no broker is named: the command reads the store alone.
    code, out = cli("--reason", "invalid-json", "--facility", "township-1", db=store_url)
    assert code == 0, out
    assert mine["id"] in out and city["id"] not in out and "invalid-json" in out
    code, out = cli("--since", "1h", db=store_url)
    assert code == 0 and all(d["id"] in out for d in listing["deadletters"]), out
    code, out = cli("--entry", "ingest", db=store_url)
    assert code == 0 and "No dead letters match" in out
    saved = tmp_path / "refused.json"
    code, out = cli("--save", mine["id"], str(saved), db=store_url)
    assert code == 0 and f"wrote {len(BAD_JSON)} bytes" in out, out
    assert saved.read_bytes() == BAD_JSON
    code, out = cli("--save", "nope", str(saved), db=store_url)
    assert code == 1 and "no dead letter nope" in out
    code, out = cli("--since", "yesterday", db=store_url)
    assert code == 2 and "is not a time" in out


async def test_fifty_clients_refused_at_once_are_all_recorded(make_settings, store_url):
    settings = make_settings(database_url=store_url)
    async with running_hub(settings) as (running, base):
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP), limits=limits,
                                     timeout=60) as c:
            async def client(i: int) -> list[int]:
                out = []
                for j in range(4):
                    body = {"resourceType": "Observation", "id": f"c{i}-{j}"}  # no status...
                    r = await c.put(f"/fhir/Observation/c{i}-{j}", json=body)
                    out.append(r.status_code)
                return out

            statuses = [s for got in await asyncio.gather(*(client(i) for i in range(50)))
                        for s in got]
        assert statuses.count(422) == 200 and not [s for s in statuses if s >= 500]
        kept = list_dead_letters(running.store, limit=500)
        assert len(kept) == 200
        assert {r.subject for r in kept} == {f"Observation/c{i}-{j}" for i in range(50)
                                             for j in range(4)}


async def test_letters_only_on_the_topic_reach_sql_too(make_settings):
    """Adapters without the hub's store (`hub mllp` at a facility) publish dead letters to
    the topic only; the hub copies them into SQL, once, under ids it derives itself."""
    settings = make_settings()
    hl7 = refuse("hl7v2", "AR", b"MSH|^~\\&|bad", detail="truncated message",
                 facility="township-1", key=b"township-1")
    # what a hub path kept itself is not copied again, whoever sent it to the topic
    claimed = refuse("ingest", "bad-signature", b"forged", natural_key=("inbound", "x", 0, 1))
    async with running_hub(settings) as (running, _):
        pub = await Publisher(settings).start()
        try:
            await pub.publish_raw(settings.topics.deadletter, [
                hl7.record(), hl7.record(),  # sent twice: one letter
                claimed.record(),
                (None, b"from an older hub", [("hub_error_reason", b"invalid-json")])])
        finally:
            await pub.stop()

        async def archived() -> bool:
            return running.archive is not None and running.archive.archived == 3

        await eventually(archived)
        rows = {r.reason: r for r in list_dead_letters(running.store)}
        assert set(rows) == {"AR", "invalid-json"}
        assert rows["AR"].id != hl7.id and rows["AR"].entry == "hl7v2"
        assert rows["AR"].detail == "truncated message" and rows["AR"].published
        assert rows["AR"].facility == "township-1"
        assert rows["invalid-json"].entry == "unknown"


def test_no_store_yet_is_said_in_one_sentence(tmp_path):
    empty = tmp_path / "nothing-here"
    env = {**os.environ, "HUB_DATA_DIR": str(empty), "COLUMNS": "400"}
    env.pop("HUB_DATABASE_URL", None)
    done = hub("deadletters", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no hub has run here yet" in done.stderr and "hub.db" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
    assert not empty.exists()  # nothing created


async def test_a_refusal_that_cannot_be_recorded_is_a_503(make_settings, caplog):
    settings = make_settings()
    unrecorded = {"path": "gateway"}
    before = REGISTRY.get_sample_value("hub_deadletters_unrecorded_total", unrecorded) or 0
    async with running_hub(settings) as (running, base):
        with running.store.begin() as conn:  # the store loses the table under the hub
            dead_letters.drop(conn)
        async with httpx.AsyncClient(base_url=base, headers=auth(TOWNSHIP)) as c:
            r = await c.post("/fhir/Observation", content=b"{", headers=FHIR_JSON)
            assert r.status_code == 503, r.text
            assert "the refusal could not be recorded" in r.text
            assert r.json()["issue"][0]["code"] == "transient"
            assert "hub_deadletters_unrecorded_total" in (await c.get(
                "/metrics", headers=auth("demo-app-token-hub-monitor"))).text
            after = REGISTRY.get_sample_value("hub_deadletters_unrecorded_total", unrecorded)
            assert after - before == 1
            assert "refusal(s) could not be recorded" in caplog.text
            running.store.create_hub_tables()
            again = await c.post("/fhir/Observation", content=b"{", headers=FHIR_JSON)
            assert again.status_code == 400
        assert count(running.store, make_filter()) == 1
