"""Remote monitoring end to end: home meters over MQTT (the machine's Mosquitto) and HTTP,
refusals dead-lettered with their reason, alerts on the team's worklist and on
hie.alerts.v1, acknowledge / resolve / escalate / refer as events, a rebuild giving the same
alerts, SLA escalation and missing readings (on SQLite and PostgreSQL), and readings sent
while the hub or the MQTT broker was down arriving once they are back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import jsonschema
import orjson
import pytest
import sqlalchemy as sa

from adapters.apps.feeds import AlertChange
from hub import clock
from hub.config import Monitoring
from hub.engine.rebuild import rebuild
from hub.monitoring import read
from hub.monitoring.projection import MonitoringProjection
from hub.schemas import schema_file
from hub.store.schema import dead_letters
from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.mqtt import MQTT_URL, Meter, OwnMosquitto, require_mqtt, unique_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
FEED_SCHEMA = orjson.loads(schema_file("alerts-feed.schema.json").read_bytes())
C1, T1, CITY = "demo-secret-community-1", "demo-secret-township-1", "demo-secret-city-1"
HOME1 = "community-1.home-01"  # signed to team-c1, hypertension; meter bp-c1-01
HOME3 = "community-1.home-03"  # team-c1, diabetic; meters bp-c1-03, glu-c1-03


def mqtt_settings(make_settings, prefix: str):
    return make_settings(monitoring=Monitoring(
        mqtt_topic=f"{prefix}/hie/devices/+/readings", mqtt_client_id=f"hub-{prefix}"))


def ago(hours: float) -> str:
    return (clock.now() - timedelta(hours=hours)).isoformat()


async def alerts(client: httpx.AsyncClient, **params) -> list[dict]:
    r = await client.get("/monitoring/worklist", params=params)
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


async def alert_of(client: httpx.AsyncClient, patient: str, kind: str, **params
                   ) -> dict | None:
    return next((a for a in await alerts(client, **params)
                 if a["patient_key"] == patient and a["kind"] == kind), None)


def letters(hub) -> list[str]:
    with hub.store.connect() as conn:
        return sorted(conn.execute(sa.select(dead_letters.c.reason).where(
            dead_letters.c.entry == "devices")).scalars())


async def test_meters_to_alerts_to_referral(make_settings, hub_clock):
    require_mqtt()
    prefix = unique_prefix()
    settings = mqtt_settings(make_settings, prefix)
    async with running_hub(settings) as (hub, base):
        await hub.start_mqtt(MQTT_URL)
        team = httpx.AsyncClient(base_url=base, headers=auth(C1))
        city = httpx.AsyncClient(base_url=base, headers=auth(CITY))
        week = [(150, 95), (128, 82), (146, 88), (122, 78), (152, 91)]  # 3 of 5 high
        first = {"time": ago(5 * 24), "systolic": 150, "diastolic": 95, "pulse": 72}
        with Meter(prefix) as meter:
            meter.send("bp-c1-01", first)
            for i, (sbp, dbp) in enumerate(week[1:], 1):
                meter.send("bp-c1-01", {"time": ago((5 - i) * 24), "systolic": sbp,
                                        "diastolic": dbp})
            meter.send("glu-c1-03", {"time": ago(1), "glucose": 18.2, "unit": "mmol/L"})
            meter.send("bp-nobody", {"time": ago(1), "systolic": 120, "diastolic": 80})
            meter.send("bp-spare-1", {"time": ago(1), "systolic": 120, "diastolic": 80})
            meter.send("bp-c1-02", {"time": ago(2), "systolic": 400, "diastolic": 80})
            meter.send("glu-c1-06", {"time": ago(2), "glucose": -1})
            meter.send("bp-c1-02", b"not json")

            async def raised() -> bool:
                return await alert_of(team, HOME1, "uncontrolled-bp") is not None and \
                    await alert_of(team, HOME3, "critical-reading") is not None
            await eventually(raised)
            meter.send("bp-c1-01", first)  # journaled by now: a duplicate

            async def all_refused() -> bool:
                return len(letters(hub)) == 6
            await eventually(all_refused)
        assert letters(hub) == ["bad-reading", "duplicate-reading", "implausible-value",
                                "implausible-value", "unbound-device", "unknown-device"]

        bp_alert = await alert_of(team, HOME1, "uncontrolled-bp")
        assert bp_alert["status"] == "open" and len(bp_alert["readings"]) == 5
        assert bp_alert["reason"].startswith("3 of the last 5 readings")
        assert not bp_alert["breached"] and bp_alert["escalated_to"] is None
        critical = await alert_of(team, HOME3, "critical-reading")
        assert critical["severity"] == "high" and critical["escalated_to"] == "city-1"
        assert [a["id"] for a in await alerts(city, escalated="true")
                if a["id"] == critical["id"]] == [critical["id"]]

        # The readings are Observations in the shared record, naming their meter.
        r = await city.get("/fhir/Observation", params={"patient": f"Patient/{HOME1}"})
        found = [e["resource"] for e in r.json()["entry"]]
        assert len(found) == 5
        assert {o["code"]["coding"][0]["code"] for o in found} == {"85354-9"}
        assert all(o["device"]["reference"].endswith("bp-c1-01") for o in found)

        status = (await city.get(f"/monitoring/patients/{HOME1}")).json()
        assert not status["controlled"] and status["enrolment"]["team"] == "team-c1"
        assert [f["kind"] for f in status["findings"]] == ["uncontrolled-bp"]

        # HTTP entry: the same intake, the same refusals.
        reading = {"time": ago(3), "systolic": 134, "diastolic": 84}
        post = "/devices/{}/readings"
        async with httpx.AsyncClient(base_url=base, headers=auth(T1)) as t1:
            r = await t1.post(post.format("bp-t1-01"), json=reading)
            assert r.status_code == 201, r.text
            assert r.json()["observation"].startswith("Observation/township-1.bp-t1-01-")
            assert (await t1.post(post.format("bp-t1-01"), json=reading)).status_code == 409
            assert (await t1.post(post.format("bp-t1-02"), json={
                **reading, "systolic": 60, "diastolic": 70})).status_code == 422
            assert (await t1.post(post.format("bp-c1-01"), json=reading)).status_code == 403
            assert (await t1.post(post.format("nobody"), json=reading)).status_code == 404
        assert (await team.post(post.format("bp-spare-1"), json=reading)).status_code == 409

        # The team acts; each action is an event, shown on the worklist.
        assert (await city.post(f"/monitoring/alerts/{bp_alert['id']}/resolve",
                                json={"by": "李医生"})).status_code == 403
        r = await team.post(f"/monitoring/alerts/{bp_alert['id']}/acknowledge",
                            json={"by": "王医生"})
        assert r.status_code == 200 and r.json()["status"] == "acknowledged", r.text
        r = await team.post(f"/monitoring/alerts/{bp_alert['id']}/resolve",
                            json={"by": "王医生", "note": "medication adjusted"})
        assert r.json()["status"] == "resolved"
        r = await team.post(f"/monitoring/alerts/{bp_alert['id']}/acknowledge",
                            json={"by": "王医生"})
        assert r.json()["status"] == "resolved"  # a resolved alert never goes back

        # An escalation becomes an up-referral in one call.
        r = await team.post(f"/monitoring/alerts/{critical['id']}/refer",
                            json={"by": "王医生", "priority": "stat"})
        assert r.status_code == 201, r.text
        referral = r.json()
        assert referral["to"] == "city-1"
        # 201 means journaled; the shared record applies it a moment later.
        await eventually(lambda: _served(city, referral["service_request"]), 30)
        await eventually(lambda: _served(city, referral["task"]), 30)
        sr = (await city.get(f"/fhir/{referral['service_request']}")).json()
        assert sr["category"][0]["coding"][0] == {"system": "http://snomed.info/sct",
                                                  "code": "3457005",
                                                  "display": "Patient referral"}
        assert sr["priority"] == "stat"
        task = (await city.get(f"/fhir/{referral['task']}")).json()
        assert task["status"] == "requested"
        assert task["focus"]["reference"] == referral["service_request"]
        assert task["owner"]["reference"].endswith("city-1")
        assert task["requester"]["reference"].endswith("community-1")
        assert (await team.post(f"/monitoring/alerts/{critical['id']}/refer",
                                json={"by": "王医生"})).status_code == 409
        critical = await alert_of(team, HOME3, "critical-reading")
        assert critical["referral"] == referral["service_request"]

        feed = await read_json_topic(settings, settings.topics.alerts, 200, timeout=10)
        for message in feed:  # the schema file, and the apps' model it is generated from
            jsonschema.validate(message, FEED_SCHEMA)
            AlertChange.model_validate(message)
        changes = {(m["alert"], m["change"]) for m in feed}
        bp_ref, crit_ref = f"DetectedIssue/{bp_alert['id']}", f"DetectedIssue/{critical['id']}"
        assert {(bp_ref, c) for c in ("opened", "acknowledged", "resolved")} <= changes
        assert {(crit_ref, c) for c in ("opened", "escalated", "referred")} <= changes

        # A rebuild from the journal gives the same alerts in the same states.
        every = ("open", "acknowledged", "resolved")
        before = read.worklist(hub.store, 24, statuses=every)
        await asyncio.to_thread(rebuild, hub.store, MonitoringProjection())
        assert read.worklist(hub.store, 24, statuses=every) == before
        await team.aclose()
        await city.aclose()


async def test_readings_sent_while_the_hub_is_down_arrive_when_it_is_back(make_settings):
    require_mqtt()
    prefix = unique_prefix()
    settings = mqtt_settings(make_settings, prefix)
    async with running_hub(settings) as (hub, _):
        await hub.start_mqtt(MQTT_URL)  # the broker now keeps this gateway's session
    with Meter(prefix) as meter:  # the hub is down
        for h in (30, 20, 10):
            meter.send("bp-t1-03", {"time": ago(h), "systolic": 131, "diastolic": 82})
    async with running_hub(settings) as (hub, base):
        await hub.start_mqtt(MQTT_URL)
        async with httpx.AsyncClient(base_url=base, headers=auth(T1)) as c:

            async def three() -> bool:
                r = await c.get("/monitoring/patients/township-1.home-03")
                return len(r.json()["readings"]) == 3
            await eventually(three)
        assert hub.mqtt.acked == 3 and letters(hub) == []


async def test_past_the_sla_an_alert_goes_to_the_specialist_and_silence_is_noticed(
        make_settings, store_url, hub_clock):
    # An SLA of a few seconds; the monitor sweeps every half second instead of every 10 s.
    settings = make_settings(monitoring=Monitoring(sla_hours=0.001), database_url=store_url)
    async with running_hub(settings) as (hub, base):
        assert hub.monitor is not None
        hub.monitor.sweep_seconds = 0.5
        async with httpx.AsyncClient(base_url=base, headers=auth(T1)) as t1:
            for h in (50, 30, 10):
                r = await t1.post("/devices/bp-t1-02/readings", json={
                    "time": ago(h), "systolic": 152, "diastolic": 96})
                assert r.status_code == 201, r.text

            async def escalated() -> bool:
                found = await alert_of(t1, "township-1.home-02", "uncontrolled-bp")
                return found is not None and found["escalated_to"] == "county-1"
            await eventually(escalated)
            found = await alert_of(t1, "township-1.home-02", "uncontrolled-bp")
            assert found["breached"] and found["status"] == "open"
            assert found["escalation_reason"] == "not acknowledged within 0.001 h"
            # township-1.home-06 signed up weeks ago and never sent a reading.
            silent = await alert_of(t1, "township-1.home-06", "missing-readings")
            assert silent is not None and "since enrolment" in silent["reason"]
            # Resolved while the resident is still silent: the same finding is not raised
            # again.
            r = await t1.post(f"/monitoring/alerts/{silent['id']}/resolve", json={"by": "赵医生"})
            assert r.json()["status"] == "resolved"
            await asyncio.sleep(3)
            assert await alert_of(t1, "township-1.home-06", "missing-readings") is None
            with hub.store.connect() as conn:
                raised = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM hub_journal WHERE subject = :s"),
                    {"s": f"DetectedIssue/{silent['id']}"}).scalar_one()
            assert raised == 1
        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-county-1")) as c:
            assert found["id"] in {a["id"] for a in await alerts(c, escalated="true")}


async def test_readings_survive_a_restart_of_the_mqtt_broker(make_settings, tmp_path):
    broker = OwnMosquitto(tmp_path / "mosquitto")
    broker.start()
    prefix = unique_prefix()
    settings = mqtt_settings(make_settings, prefix)
    try:
        async with running_hub(settings) as (hub, _):
            await hub.start_mqtt(broker.url)  # the session now lives in the broker
        with broker.meter(prefix) as meter:  # the hub is down
            for h in (30, 20):
                meter.send("bp-t1-04", {"time": ago(h), "systolic": 128, "diastolic": 81})
        broker.stop()  # ... and the MQTT broker restarts too
        broker.start()
        async with running_hub(settings) as (hub, base), \
                httpx.AsyncClient(base_url=base, headers=auth(T1)) as c:
            await hub.start_mqtt(broker.url)

            async def readings(n: int) -> bool:
                r = await c.get("/monitoring/patients/township-1.home-04")
                return len(r.json()["readings"]) == n
            await eventually(lambda: readings(2))
            # The broker goes away under a running hub: the gateway reconnects by itself.
            broker.stop()
            await eventually(lambda: _false_then(hub.mqtt.connected.is_set()))
            broker.start()
            await eventually(lambda: _true(hub.mqtt.connected.is_set()), timeout=30)
            with broker.meter(prefix) as meter:
                meter.send("bp-t1-04", {"time": ago(10), "systolic": 126, "diastolic": 80})
            await eventually(lambda: readings(3))
            assert letters(hub) == []
    finally:
        broker.stop()


async def _true(value: bool) -> bool:
    return value


async def _false_then(value: bool) -> bool:
    return not value


async def _served(client: httpx.AsyncClient, ref: str) -> bool:
    return (await client.get(f"/fhir/{ref}")).status_code == 200
