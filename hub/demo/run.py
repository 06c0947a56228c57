"""``hub demo``: the whole hub on one machine, fed by a simulated consortium.

Hospitals, township and community centres publish Bundles through the HTTP gateway; village
clinics publish signed events to ``hie.inbound.v1`` with the kafka-python SDK. A small share
of what they send is deliberately invalid, to show dead-lettering.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import httpx
import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from adapters.sdk import FacilityPublisher
from hub.activity.projection import ActivityProjection
from hub.config import Settings
from hub.demo.population import PopulationSimulator, SimFacility
from hub.engine.rebuild import ensure_built
from hub.facilities import Facility
from hub.imaging.projection import ImagingProjection
from hub.lab.projection import LabProjection
from hub.mpi.projection import MpiProjection
from hub.projections import all_projections
from hub.service import Hub
from hub.signing import demo_signer
from hub.store.schema import journal

INVALID_SHARE = 0.005


class ConsortiumSimulator:
    """Publishes simulated events at ``rate`` per second through the public entry paths."""

    def __init__(self, hub: Hub, rate: float, seed: int = 7) -> None:
        assert hub.directory is not None
        self.hub = hub
        self.rate = rate
        self.facilities: list[Facility] = list(hub.directory)
        self.population = PopulationSimulator(
            [SimFacility(f.id, f.tier) for f in self.facilities], seed=seed)
        self.rng = random.Random(seed)
        self.sent_gateway = 0
        self.sent_sdk = 0
        self.rejected_http = 0
        self.spoiled = 0
        self._tokens = {f.id: f.token for f in self.facilities}
        self._tiers = {f.id: f.tier for f in self.facilities}

    def _spoil(self, resource: dict) -> dict:
        if resource.get("resourceType") == "Observation" and self.rng.random() < INVALID_SHARE:
            self.spoiled += 1
            return {k: v for k, v in resource.items() if k != "status"}
        return resource

    async def run(self, stop: asyncio.Event) -> None:
        s = self.hub.settings
        base = f"http://{s.api_host}:{s.api_port}"
        # Village clinics publish over Kafka with their (demo) private keys; a facility
        # whose registered key is not the demo key has no key here, so it uses the gateway.
        sdk = {f.id: FacilityPublisher(s.bootstrap, demo_signer(f.id), topic=s.topics.inbound)
               for f in self.facilities if f.tier == "village-clinic" and _has_demo_key(f)}
        tick = 0.25
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    bundles: dict[str, list[dict]] = {}
                    for _ in range(max(1, round(self.rate * tick))):
                        fid, res = self.population.next_event()
                        res = self._spoil(res)
                        if fid in sdk:
                            sdk[fid].publish(res)
                            self.sent_sdk += 1
                        else:
                            bundles.setdefault(fid, []).append(res)
                    await asyncio.gather(*(self._post(client, fid, entries)
                                           for fid, entries in bundles.items()))
                    await asyncio.to_thread(lambda: [p.flush() for p in sdk.values()])
                    await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
        finally:
            for p in sdk.values():
                await asyncio.to_thread(p.close)

    async def _post(self, client: httpx.AsyncClient, fid: str, entries: list[dict]) -> None:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in entries]}
        resp = await client.post("/fhir", json=bundle,
                                 headers={"Authorization": f"Bearer {self._tokens[fid]}"})
        if resp.status_code != 200:
            self.rejected_http += len(entries)
            return
        for e in resp.json().get("entry", []):
            if e["response"]["status"].startswith("201"):
                self.sent_gateway += 1
            else:
                self.rejected_http += 1


def _summary(hub: Hub, sim: ConsortiumSimulator, started: float) -> Group:
    assert hub.store is not None
    activity = ActivityProjection().tables(sa.MetaData())["activity_counts"]
    with hub.store.connect() as conn:
        per_type = conn.execute(
            sa.select(activity.c.resource_type, sa.func.sum(activity.c.events))
            .group_by(activity.c.resource_type).order_by(activity.c.resource_type)).all()
        per_tier: dict[str, int] = {}
        for fid, n in conn.execute(sa.select(activity.c.facility,
                                             sa.func.sum(activity.c.events))
                                   .group_by(activity.c.facility)):
            tier = sim._tiers.get(fid, "?")
            per_tier[tier] = per_tier.get(tier, 0) + int(n)
        journaled = conn.execute(sa.select(sa.func.count()).select_from(journal)).scalar_one()
        mpi = MpiProjection().tables(sa.MetaData())
        records = conn.execute(sa.select(sa.func.count()).select_from(mpi["mpi_link"])
                               ).scalar_one()
        persons = conn.execute(sa.select(sa.func.count(sa.distinct(
            mpi["mpi_link"].c.person_id)))).scalar_one()
        reviews = conn.execute(sa.select(sa.func.count()).select_from(mpi["mpi_review"])
                               .where(mpi["mpi_review"].c.status == "requested")).scalar_one()
        img = ImagingProjection().tables(sa.MetaData())
        waiting = conn.execute(sa.select(sa.func.count()).select_from(
            img["img_study"].outerjoin(img["img_report"], img["img_report"].c.study_id ==
                                       img["img_study"].c.study_id))
            .where(img["img_report"].c.study_id.is_(None))).scalar_one()
        lab = LabProjection().tables(sa.MetaData())
        results, abnormal = conn.execute(sa.select(
            sa.func.count(), sa.func.sum(sa.case((lab["lab_result"].c.flag.in_(
                ("H", "HH", "L", "LL", "A", "AA")), 1), else_=0)))
            .where(lab["lab_result"].c.visible.is_(True))).one()
    t = Table(title="accepted events by type", expand=False)
    t.add_column("resource type")
    t.add_column("events", justify="right")
    for rtype, n in per_type:
        t.add_row(rtype, str(n))
    tiers = Table(title="by tier")
    tiers.add_column("tier")
    tiers.add_column("events", justify="right")
    for tier, n in sorted(per_tier.items()):
        tiers.add_row(tier, str(n))
    ingest = hub.ingest.stats if hub.ingest else None
    lines = [
        f"running {time.monotonic() - started:5.0f}s   gateway accepted {sim.sent_gateway}   "
        f"SDK sent {sim.sent_sdk} (ingest accepted {ingest.accepted if ingest else 0}, "
        f"rejected {ingest.rejected if ingest else 0})   gateway rejected {sim.rejected_http}   "
        f"(deliberately invalid: {sim.spoiled})",
        f"journal {journaled} events   " + "   ".join(
            f"{r.projection.name}: {r.stats.applied} applied" for r in hub.runners),
        f"patient index: {records} facility records of {persons} residents, {reviews} open "
        f"reviews (hub mpi reviews --url http://{hub.settings.api_host}:"
        f"{hub.settings.api_port} --token demo-secret-city-1)",
        f"imaging and ECG: {waiting} studies waiting for a reading centre (curl -H "
        f"'Authorization: Bearer demo-secret-county-1' http://{hub.settings.api_host}:"
        f"{hub.settings.api_port}/imaging/worklist)",
        f"lab results: {results} shown, {abnormal or 0} flagged abnormal; change feed "
        f"{hub.settings.topics.lab}: "
        f"{hub.feeds['lab'].sent if 'lab' in hub.feeds else 0} messages sent",
    ]
    return Group(Panel("\n".join(lines), title="hub demo"), t, tiers)


async def run_demo(settings: Settings, console: Console, seconds: float | None,
                   rate: float) -> None:
    async with Hub(settings) as hub:
        assert hub.store is not None
        # Tables first (a no-op when they exist), so the live summary can always query them.
        for projection in all_projections().values():
            await asyncio.to_thread(ensure_built, hub.store, projection)
        hub.start_api()
        hub.start_ingest()
        hub.start_projections()
        await hub.api_ready()
        base = f"http://{settings.api_host}:{settings.api_port}"
        console.print(Panel.fit(
            f"Kafka{' (bundled, memory only)' if settings.embedded else ''}: "
            f"{settings.bootstrap}\n"
            f"Store: {settings.db_url}\n"
            f"FHIR API: {base}/fhir   (docs: {base}/docs, metrics: {base}/metrics)\n"
            f"Try:  curl -H 'Authorization: Bearer demo-secret-city-1' "
            f"'{base}/fhir/Observation?patient=Patient/city-1.p-000001'\n"
            f"Dead letters: hub deadletters --db {settings.db_url}\n"
            + ("Ctrl-C stops." if seconds is None else f"Stops after {seconds:g}s."),
            title="hub demo"))
        stop = asyncio.Event()
        sim = ConsortiumSimulator(hub, rate)
        sim_task = asyncio.create_task(sim.run(stop))
        started = time.monotonic()
        try:
            with Live(_summary(hub, sim, started), console=console,
                      refresh_per_second=2) as live:
                try:
                    while seconds is None or time.monotonic() - started < seconds:
                        await asyncio.sleep(0.5)
                        if sim_task.done():
                            sim_task.result()  # surface a simulator crash
                        live.update(_summary(hub, sim, started))
                except asyncio.CancelledError:
                    # Ctrl-C: stop publishing, let the projections drain, then shut down.
                    asyncio.current_task().uncancel()
                    console.print("stopping: draining the projections ...")
                stop.set()
                await sim_task
                # Let the projections take in the last events before stopping.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    caught = [await r._caught_up() for r in hub.runners]
                    if all(caught):
                        break
                    await asyncio.sleep(0.5)
                live.update(_summary(hub, sim, started))
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(sim_task, 10)
    console.print("\n[green]demo stopped cleanly[/green]")


def _has_demo_key(f: Facility) -> bool:
    key = f.record.current_key()
    return key is not None and key.kid == demo_signer(f.id).kid and \
        key.public_key == demo_signer(f.id).public_key
