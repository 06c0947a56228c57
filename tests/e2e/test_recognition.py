"""POST /recognition/$check against a running hub: prior results from several facilities,
judged by the catalogue and the registry (EQA on the result date, tier, status, validity)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from hub.cli import app
from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually, put_resource, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
LAB = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}]


def glucose(oid: str, when: str, status: str = "final", version: int = 1) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": status, "category": LAB,
            "meta": {"versionId": str(version), "lastUpdated": f"{when[:10]}T10:00:0{version}Z"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
            "valueQuantity": {"value": 5.6, "unit": "mmol/L",
                              "system": "http://unitsofmeasure.org", "code": "mmol/L"}}


async def test_check_explains_each_prior_result(make_settings, hub_clock):
    on = hub_clock.on
    async with running_hub(make_settings()) as (_, base):
        async def put(token: str, res: dict) -> None:
            await put_resource(base, token, res)

        t1, t4 = "demo-secret-township-1", "demo-secret-township-4"
        await put(t1, patient("p1"))
        await put(t4, patient("p1"))
        # township-1 holds a current lab EQA pass; township-4's lapsed months ago.
        await put(t1, glucose("g1", on(-4, "08:00:00")))
        await put(t4, glucose("g4", on(-3, "08:00:00")))
        await put(t1, glucose("g0", on(-23, "08:00:00")))  # too old for GLU by the day of ordering
        await put(t1, glucose("g2", on(-2, "08:00:00"), "amended", 2))

        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1")) as c:
            async def check(time: str = on(-1, "09:00:00")) -> dict:
                r = await c.post("/recognition/$check", json={
                    "patient": "Patient/township-1.p1", "items": ["GLU", "HBA1C", "ABG"],
                    "time": time})
                assert r.status_code == 200, r.text
                return {i["item"]: i for i in r.json()["items"]}

            async def seen() -> bool:
                glu = (await check())["GLU"]
                return len(glu["recognisable"]) + len(glu["not_recognisable"]) == 4

            await eventually(seen)
            got = await check()
            glu = got["GLU"]
            assert glu["mark"] == "HR"
            assert [r["result"] for r in glu["recognisable"]] == ["township-1.g1"]
            assert glu["recognisable"][0]["valid_through"] == hub_clock.date(3)
            why = {r["result"]: r["why_not"] for r in glu["not_recognisable"]}
            assert "amended" in why["township-1.g2"]
            assert f"no valid lab EQA pass on the result date {hub_clock.date(-3)}" in why[
                "township-4.g4"]
            assert "expired" in why["township-1.g0"]
            assert got["HBA1C"]["reason"] == "no prior result for this item"
            assert got["ABG"]["reason"].startswith("on the negative list")
            # The same check, the operator's way.
            shown = await asyncio.to_thread(CliRunner().invoke, app, [
                "recognition", "check", "--patient", "township-1.p1", "--items", "GLU,ABG",
                "--time", on(-1, "09:00:00"), "--url", base,
                "--token", "demo-secret-city-1"], env={"COLUMNS": "250"})
            assert shown.exit_code == 0, shown.output
            assert "HR recognisable" in shown.output and "township-1.g1" in shown.output
            assert "negative list" in shown.output
            later = (await check(on(4, "09:00:00")))["GLU"]  # g1 is valid for 7 days
            assert later["recognisable"] == []
            bad = await c.post("/recognition/$check", json={
                "patient": "township-1.p1", "items": ["GLU"], "time": "tomorrow"})
            assert bad.status_code == 400 and "RFC 3339" in bad.text

            # The doctor decides; decisions are events, and the statistics follow them.
            async def decide(**body) -> httpx.Response:
                return await c.post("/recognition/decisions",
                                    json={"patient": "township-1.p1", **body})

            ok = await decide(item="GLU", decision="recognised",
                              result="Observation/township-1.g1")
            assert ok.status_code == 201, ok.text
            refused = await decide(item="HBA1C", decision="retested")
            assert refused.status_code == 422 and "needs a reason code" in refused.text
            assert refused.json()["resourceType"] == "OperationOutcome"
            vague = await decide(item="HBA1C", decision="retested", reason="other")
            assert vague.status_code == 422 and "needs a text" in vague.text
            assert (await decide(item="HBA1C", decision="retested",
                                 reason="condition-changed")).status_code == 201
            assert (await decide(item="XYZ", decision="retested",
                                 reason="not-in-catalogue")).status_code == 201

            async def counted() -> bool:  # all three decisions folded
                s = (await c.get("/recognition/statistics",
                                 params={"facility": "city-1"})).json()
                return {r["item"] for r in s["rows"]} == {"GLU", "HBA1C", "XYZ"}

            await eventually(counted)
            month = hub_clock.date()[:7]
            stats = (await c.get("/recognition/statistics", params={"month": month})).json()
            rows = {r["item"]: r for r in stats["rows"]}
            assert rows["GLU"]["saved_yuan"] == 4.0 and rows["GLU"]["recognition_rate"] == 1.0
            assert rows["HBA1C"]["reasons"] == {"condition-changed": 1}
            assert rows["XYZ"]["not_counted"] == 1 and rows["XYZ"]["recognition_rate"] is None
            csv = await c.get("/recognition/statistics.csv")
            assert csv.headers["content-type"].startswith("text/csv")
            lines = csv.text.lstrip("\ufeff").splitlines()
            assert lines[0].startswith("facility,month,item,recognised")
            assert any(line.startswith(f"city-1,{month},GLU,1,0,0,1.0,4.00") for line in lines)


async def test_order_time_prompt_and_its_withdrawal_when_eqa_lapses(make_settings, tmp_path,
                                                                   hub_clock):
    on = hub_clock.on

    from hub.demo.population import gb11643_check
    from hub.registry.consortium_file import read_consortium, write_consortium

    consortium = tmp_path / "consortium.yaml"
    write_consortium(read_consortium(None), consortium)
    settings = make_settings(facilities_file=consortium, registry_poll_seconds=0.2)
    body = "33040219600305123"
    nid = body + gb11643_check(body)

    def person(pid: str) -> dict:
        return {"resourceType": "Patient", "id": pid,
                "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": nid}],
                "name": [{"text": "张伟"}], "gender": "male", "birthDate": "1960-03-05"}

    hba1c = {**glucose("h1", on(-14, "08:00:00")),
             "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
             "valueQuantity": {"value": 6.1, "unit": "%", "system": "http://unitsofmeasure.org",
                               "code": "%"}}
    async with running_hub(settings) as (_, base):
        async def put(token: str, res: dict) -> None:
            await put_resource(base, token, res)

        t1, county = "demo-secret-township-1", "demo-secret-county-1"
        await put(t1, person("p1"))
        await put(county, person("p7"))
        await put(t1, glucose("g1", on(-4, "08:00:00")))
        await put(t1, hba1c)
        async with httpx.AsyncClient(base_url=base, headers=auth(county)) as c:
            async def linked() -> bool:
                r = (await c.get("/mpi/records/county-1.p7")).json()
                return r["records"] == ["county-1.p7", "township-1.p1"]

            await eventually(linked)

            async def on_file() -> bool:  # the lab projection runs on its own: wait for it
                r = (await c.post("/recognition/$check", json={
                    "patient": "county-1.p7", "items": ["GLU"],
                    "time": on(-1, "09:00:00")})).json()
                return bool(r["items"][0]["recognisable"])

            await eventually(on_file)
            await put(county, {
                "resourceType": "ServiceRequest", "id": "o1", "status": "active",
                "intent": "order", "authoredOn": on(-1, "09:00:00"),
                "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                "subject": {"reference": "Patient/p7"}})
            (prompt,) = await read_json_topic(settings, settings.topics.recognition, 1)
            assert prompt["type"] == "hie.recognition.prompt.v1"
            assert prompt["request"] == "ServiceRequest/county-1.o1"
            assert prompt["items"][0]["item"] == "GLU"
            assert [r["result"] for r in prompt["items"][0]["results"]] == ["township-1.g1"]

            # township-1 loses its lab EQA pass from the day of g1: the prompt relying on it
            # is withdrawn; its older HbA1c result stays recognisable.
            done = await asyncio.to_thread(CliRunner().invoke, app, [
                "facility", "set-eqa", "township-1", "lab", "--from", hub_clock.date(-200),
                "--to", hub_clock.date(-5), "--facilities", str(consortium)])
            assert done.exit_code == 0, done.output
            msgs = await read_json_topic(settings, settings.topics.recognition, 2)
            schema = orjson.loads((Path(__file__).resolve().parents[2] / "schemas" /
                                   "recognition-prompt.schema.json").read_bytes())
            for m in msgs:
                jsonschema.validate(m, schema)
            assert msgs[1]["type"] == "hie.recognition.withdrawn.v1"
            assert msgs[1]["items"] == ["GLU"]
            after = (await c.post("/recognition/$check", json={
                "patient": "county-1.p7", "items": ["GLU", "HBA1C"],
                "time": on(-1, "10:00:00")})).json()
            verdict = {i["item"]: i for i in after["items"]}
            assert verdict["GLU"]["recognisable"] == []
            assert "EQA" in verdict["GLU"]["reason"]
            assert [r["result"] for r in verdict["HBA1C"]["recognisable"]] == ["township-1.h1"]
