"""The demo's home meters and family doctors (remote monitoring).

Every resident the demo consortium signs to a family-doctor team gets a story, drawn from
the seed: most are controlled, some drift out of control (blood pressure creeping up, a
fasting glucose above 7), one has a critical reading now and then, and some meters fall
silent (the team sees "missing readings"). The last four days are back-filled on start,
then each meter keeps sending, through the MQTT device gateway when the demo runs one
(``--mqtt``), else over HTTP (``POST /devices/{id}/readings``). A spare meter nobody is bound
to and a misbehaving one show the refusals. The teams' doctors acknowledge and resolve what
reaches their worklist, and refer a critical case up to their specialist.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from hub import clock
from hub.registry.care import CareRegistry, Device

STORIES = ("controlled", "controlled", "drifting", "controlled", "silent", "critical")
DOCTORS = {"community-1": "王医生", "township-1": "赵医生"}
LIVE_EVERY = 2.0  # seconds between live readings (one meter at a time)
DOCTOR_EVERY = 8.0  # seconds between the doctors' looks at their worklists


def story_of(rng: random.Random, patient: str) -> str:
    # A stable story per resident whatever the order the registry lists them in.
    return random.Random(f"{rng.random():.6f}{patient}").choice(STORIES)


def bp_value(rng: random.Random, story: str, progress: float) -> tuple[int, int]:
    """Systolic/diastolic for a story; ``progress`` runs 0 -> 1 over the back-filled days."""
    if story == "drifting":
        return round(rng.gauss(128 + 24 * progress, 5)), round(rng.gauss(82 + 10 * progress, 3))
    if story == "critical" and rng.random() < 0.25:
        return round(rng.gauss(188, 4)), round(rng.gauss(112, 3))
    return round(rng.gauss(126, 6)), round(rng.gauss(79, 4))


def glucose_value(rng: random.Random, story: str, progress: float) -> float:
    if story in ("drifting", "critical"):
        return round(rng.gauss(6.6 + 1.4 * progress, 0.3), 1)
    return round(rng.gauss(5.8, 0.4), 1)


class HomeMeters:
    def __init__(self, care: CareRegistry, base: str, tokens: dict[str, str], seed: int = 7,
                 mqtt: Any = None, mqtt_prefix: str = "") -> None:
        self.care = care
        self.base = base
        self.tokens = tokens  # facility -> gateway token
        self.rng = random.Random(seed)
        self.mqtt = mqtt  # a connected paho client when the demo runs the MQTT gateway
        self.mqtt_prefix = mqtt_prefix
        self.stories = {d.patient: story_of(self.rng, d.patient)
                        for d in care.devices if d.patient}
        self.sent = Counter[str]()
        self.answers = Counter[str]()
        self.actions = Counter[str]()

    def reading(self, device: Device, at: datetime, progress: float) -> dict:
        story = self.stories[device.patient or ""]
        stamp = at.astimezone(clock.CONSORTIUM_TZ).isoformat(timespec="seconds")
        if device.kind == "bp":
            sbp, dbp = bp_value(self.rng, story, progress)
            return {"time": stamp, "systolic": sbp, "diastolic": dbp,
                    "pulse": round(self.rng.gauss(74, 6))}
        return {"time": stamp, "glucose": glucose_value(self.rng, story, progress),
                "unit": "mmol/L", "fasting": True}

    async def send(self, client: httpx.AsyncClient, device: Device, payload: bytes) -> None:
        self.sent[device.id] += 1
        if self.mqtt is not None:
            topic = f"{self.mqtt_prefix}hie/devices/{device.id}/readings"
            info = self.mqtt.publish(topic, payload, qos=1)
            await asyncio.to_thread(info.wait_for_publish, 5)
            self.answers["mqtt"] += 1
            return
        try:
            r = await client.post(f"/devices/{device.id}/readings", content=payload,
                                  headers={"Authorization": f"Bearer "
                                           f"{self.tokens[device.facility]}",
                                           "Content-Type": "application/json"})
            self.answers[str(r.status_code)] += 1
        except httpx.HTTPError:
            self.answers["error"] += 1

    def _speaking(self) -> list[Device]:
        return [d for d in self.care.devices
                if d.patient and self.stories[d.patient] != "silent"]

    async def residents(self, client: httpx.AsyncClient) -> None:
        """The monitored residents' records at their facility (PUT: a rerun replaces)."""
        for team in self.care.teams:
            for i, r in enumerate(team.residents):
                fac, pid = r.patient.split(".", 1)
                patient = {"resourceType": "Patient", "id": pid, "identifier": [
                    {"system": f"urn:hie:facility:{fac}:mrn", "value": f"HOME-{pid}"}],
                    "name": [{"text": f"居民{pid[-2:]}号"}],
                    "gender": "female" if i % 2 else "male", "birthDate": f"195{i}-03-0{i + 1}"}
                with contextlib.suppress(httpx.HTTPError):
                    await client.put(f"/fhir/Patient/{pid}", json=patient, headers={
                        "Authorization": f"Bearer {self.tokens[fac]}"})

    async def history(self, client: httpx.AsyncClient, days: int = 4) -> None:
        now = clock.now()
        for device in self._speaking():
            per_day = 2 if device.kind == "bp" else 1
            for n in range(days * per_day):
                hours = days * 24 - n * 24 / per_day
                at = now - timedelta(hours=hours, minutes=self.rng.randrange(0, 50))
                await self.send(client, device, orjson.dumps(
                    self.reading(device, at, n / (days * per_day))))
        # What the gateway refuses: a meter nobody is bound to, a value no meter measures.
        spare = next((d for d in self.care.devices if not d.patient), None)
        if spare is not None:
            await self.send(client, spare, orjson.dumps(
                {"time": now.isoformat(), "systolic": 121, "diastolic": 79}))
        broken = self._speaking()[0]
        await self.send(client, broken, orjson.dumps(
            {"time": now.isoformat(), "systolic": 400, "diastolic": 80}))

    async def live(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        speaking = self._speaking()
        while not stop.is_set() and speaking:
            device = self.rng.choice(speaking)
            await self.send(client, device, orjson.dumps(
                self.reading(device, clock.now(), 1.0)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIVE_EVERY)

    async def doctors(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Each team's doctor looks at the worklist now and then: acknowledges the oldest
        open alert, resolves some acknowledged ones, refers the first critical case up."""
        referred = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DOCTOR_EVERY)
            for facility, doctor in DOCTORS.items():
                auth = {"Authorization": f"Bearer {self.tokens[facility]}"}
                try:
                    r = await client.get("/monitoring/worklist", headers=auth)
                    alerts = r.json().get("alerts", []) if r.status_code == 200 else []
                    opened = [a for a in alerts if a["status"] == "open"]
                    critical = [a for a in alerts if a["kind"] == "critical-reading"
                                and not a["referral"]]
                    if critical and not referred:
                        r = await client.post(f"/monitoring/alerts/{critical[0]['id']}/refer",
                                              json={"by": doctor, "priority": "urgent"},
                                              headers=auth)
                        referred = r.status_code == 201
                        self.actions["referred" if referred else f"refer {r.status_code}"] += 1
                    if opened and self.rng.random() < 0.5:
                        await self._act(client, auth, opened[-1]["id"], "acknowledge", doctor)
                    acked = [a for a in alerts if a["status"] == "acknowledged"]
                    if acked and self.rng.random() < 0.3:
                        await self._act(client, auth, acked[0]["id"], "resolve", doctor)
                except httpx.HTTPError:
                    self.actions["error"] += 1

    async def _act(self, client: httpx.AsyncClient, auth: dict, alert: str, action: str,
                   doctor: str) -> None:
        r = await client.post(f"/monitoring/alerts/{alert}/{action}", json={"by": doctor},
                              headers=auth)
        self.actions[action if r.status_code == 200 else f"{action} {r.status_code}"] += 1

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            await self.residents(client)
            await self.history(client)
            await asyncio.gather(self.live(client, stop), self.doctors(client, stop))

