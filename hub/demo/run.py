"""``hub demo``: the whole hub on one machine, fed by a simulated consortium living *now*.

The story is anchored to the hub's clock: the last two weeks are back-filled first (results,
studies with their reading centres' reports, orders), then the consortium works live —
hospitals, township and community centres publish through the HTTP gateway; village clinics
publish signed events to ``hie.inbound.v1`` with the kafka-python SDK; readers at the reading
centres claim studies from their worklist and report them; hospital doctors order catalogue
items, run the recognition check and record their decisions. All through the hub's public
entry paths. A small share of what facilities send is deliberately invalid, to show
dead-lettering.

A second run on the same data directory continues the story (``demo-state.json`` holds the
population; ids never repeat, so nothing earlier is overwritten); ``fresh=True`` starts anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from adapters.sdk import FacilityPublisher
from hub import clock
from hub.cli.common import hub_command
from hub.config import Settings
from hub.demo.devices import HomeMeters
from hub.demo.population import ITEMS, READERS, SimFacility, anchored, order_items
from hub.demo.referrals import ReferralDesks
from hub.demo.referrals import summary_lines as referral_lines
from hub.envelope import HUB_SOURCE
from hub.errors import HubError
from hub.facilities import Facility
from hub.imaging import read as imaging_read
from hub.imaging import rules as imaging_rules
from hub.imaging.projection import FIRST, STUDIES, ImagingProjection
from hub.lab.projection import RESULTS, LabProjection
from hub.monitoring import read as monitoring_read
from hub.mpi.projection import MpiProjection
from hub.recognition.projection import ORDERS, STATS, RecognitionProjection
from hub.referral.read import referral_policy
from hub.service import Hub
from hub.signing import demo_private_key, demo_signer, write_private_key
from hub.store.db import Store
from hub.store.schema import journal, recognition_prompts

INVALID_SHARE = 0.005
HISTORY_EVENTS = 2_400  # back-filled over the last two weeks on a fresh start
STATE_FILE = "demo-state.json"
SDK_FACILITY = "village-1"  # the clinic whose private key the demo writes for SDK users
SERVICES = ("imaging", "ecg", "pathology")
READERS_PER_CENTRE = 3
READING_SECONDS = (0.3, 1.5)  # a demo reader is quick
STATUS_EVERY = 5.0  # seconds between status lines when the output is not a terminal
TICK = 0.25
# Why a doctor orders a test again although a recognisable result exists (weights).
RETEST_REASONS = {"condition-changed": 40, "no-longer-reflects": 20, "emergency": 15,
                  "patient-request": 12, "quality-doubt": 8, "other": 5}
RECOGNISE_SHARE = 0.8
EVENT_TYPE_HUB = {"Organization": "registry", "Person": "patient index",
                  "Task": "index reviews, escalations", "CareTeam": "registry",
                  "EpisodeOfCare": "registry", "Device": "registry",
                  "DetectedIssue": "monitoring alerts"}


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- the data directory: fresh start, continuing state, the SDK key -------------------------


def _sqlite_path(settings: Settings) -> Path | None:
    url = settings.db_url
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def clear_store(settings: Settings) -> list[Path]:
    """``--fresh``: remove the demo's SQLite store and its story; keys and secrets stay."""
    db = _sqlite_path(settings)
    if db is None:
        raise HubError(f"--fresh clears only a SQLite store; {settings.db_url} is not one "
                       "(drop its tables yourself, or leave out --fresh to continue)")
    removed = []
    for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")),
                 settings.data_dir / STATE_FILE):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def load_state(data_dir: Path) -> dict | None:
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HubError(f"{path} is unreadable ({exc}); remove it or run with --fresh") from exc
    return state if state.get("version") == 1 else None


def save_state(data_dir: Path, state: dict) -> None:
    """Atomically: a demo stopped mid-write keeps the previous state."""
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


def write_sdk_key(settings: Settings, facility: Facility | None) -> Path | None:
    """The demo private key of one village clinic, where the README's SDK example reads it
    (``hub-data/keys/village-1-1.pem``). Only for a facility still on its demo key."""
    if facility is None or not _has_demo_key(facility):
        return None
    kid = demo_signer(facility.id).kid
    path = settings.data_dir / "keys" / f"{kid.replace('#', '-')}.pem"
    if not path.exists():
        write_private_key(path, demo_private_key(facility.id))
    return path


def used_ids(store: Store) -> dict[tuple[str, str], int]:
    """(facility, id prefix) -> the highest ``<prefix>-<n>`` already journaled, so a new
    story never hands out an id the store holds (which would overwrite that resource)."""
    used: dict[tuple[str, str], int] = {}
    prefix = len("urn:hie:facility:")
    with store.connect() as conn:
        rows = conn.execute(sa.select(journal.c.source, journal.c.subject)
                            .where(journal.c.source != HUB_SOURCE)
                            .execution_options(yield_per=5000))
        for source, subject in rows:
            local = subject.partition("/")[2]
            head, _, number = local.rpartition("-")
            if head and number.isdigit():
                key = (source[prefix:], head)
                used[key] = max(used.get(key, 0), int(number))
    return used


# --- the simulated consortium -----------------------------------------------------------------


@dataclass
class Counts:
    """What this run sent, by entry path (the summary explains the journal with these)."""

    gateway: int = 0  # facility systems' resources accepted by the gateway (201)
    gateway_refused: int = 0
    sdk: int = 0  # published by village clinics to hie.inbound.v1
    spoiled: int = 0  # deliberately invalid
    history: int = 0  # back-filled events sent
    orders: int = 0
    checks: int = 0
    recognised: int = 0
    retested: int = 0
    not_counted: int = 0
    claims_won: int = 0
    claims_lost: int = 0
    claims_unsettled: int = 0  # published, but not applied within the API's wait (503)
    reports: int = 0  # readers' reports (and amendments) accepted by the gateway
    errors: dict[str, int] = field(default_factory=dict)
    why_not: Counter = field(default_factory=Counter)  # ordered items with nothing to recognise

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    @property
    def through_api(self) -> int:
        """Facility events the API published for readers and doctors (claims, decisions)."""
        return self.claims_won + self.claims_lost + self.claims_unsettled + \
            self.recognised + self.retested + self.not_counted


class ConsortiumSimulator:
    """Publishes simulated events at ``rate`` per second through the public entry paths."""

    def __init__(self, hub: Hub, rate: float, seed: int = 7,
                 history_events: int = HISTORY_EVENTS, state: dict | None = None,
                 used: dict[tuple[str, str], int] | None = None) -> None:
        assert hub.directory is not None
        self.hub = hub
        self.rate = rate
        self.facilities: list[Facility] = list(hub.directory)
        self.runs = (state or {}).get("runs", 0) + 1
        self.seed = seed
        sims = [SimFacility(f.id, f.tier, {svc: c for svc in SERVICES
                                           if (c := f.record.reading_centre(svc))})
                for f in self.facilities]
        self.population, times = anchored(sims, seed + self.runs - 1, history_events,
                                          (state or {}).get("population"))
        for (fid, prefix), n in (used or {}).items():
            self.population.reserve_ids(fid, prefix, n)
        # The history is decided before anything is sent, so the hints can name a patient.
        self.backlog = [self.population.next_event(t) for t in times]
        self.history_total = len(self.backlog)
        self.phase = "history" if self.backlog else "live"
        self.rng = random.Random(seed + 1000 * self.runs)
        self.counts = Counts()
        self._tokens = {f.id: f.token for f in self.facilities}
        self.tiers = {f.id: f.tier for f in self.facilities}
        self.centres = sorted({c for s in sims for c in s.reading_centres.values()
                               if c in self._tokens})
        self._doctors = asyncio.Semaphore(4)
        directory = hub.directory
        self.referrals = ReferralDesks(self.population, self._tokens,
                                       lambda: {f.id: f.record for f in directory},
                                       seed + 2000 * self.runs)
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None

    # Hints name a patient who has results, ideally at several facilities.
    def example_patient(self) -> str:
        seen: dict[str, int] = {}
        for fid, res in self.backlog:
            if fid in ("city-1", "county-1") and res["resourceType"] == "Observation":
                key = f"{fid}.{res['subject']['reference'].split('/')[1]}"
                seen[key] = seen.get(key, 0) + 1
        if seen:
            return max(seen, key=seen.__getitem__)
        return self.population.busiest_patient(("city-1", "county-1")) or "city-1.p-000001"

    def state(self) -> dict:
        return {"version": 1, "runs": self.runs, "seed": self.seed,
                "saved": clock.now_rfc3339(), "population": self.population.snapshot()}

    def _spoil(self, resource: dict) -> dict:
        if resource.get("resourceType") == "Observation" and self.rng.random() < INVALID_SHARE:
            self.counts.spoiled += 1
            return {k: v for k, v in resource.items() if k != "status"}
        return resource

    def _auth(self, fid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[fid]}"}

    async def run(self, stop: asyncio.Event) -> None:
        s = self.hub.settings
        base = f"http://{s.api_host}:{s.api_port}"
        # Village clinics publish over Kafka with their (demo) private keys; a facility
        # whose registered key is not the demo key has no key here, so it uses the gateway.
        sdk = {f.id: FacilityPublisher(s.bootstrap, demo_signer(f.id), topic=s.topics.inbound)
               for f in self.facilities if f.tier == "village-clinic" and _has_demo_key(f)}
        try:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                self._client = client
                await self._history(stop, sdk)
                # Live work starts on a hub that has taken the history in: a doctor's check
                # must find last week's results.
                self.phase = "catching up"
                await self._catch_up(stop)
                self.phase = "live"
                for centre in self.centres:
                    self._spawn(self._reading_centre(centre, stop))
                self._spawn(self.referrals.run(client, stop))
                await self._live(stop, sdk)
                # Readers and doctors finish what they hold, so every claim and decision the
                # API published is counted; whatever still hangs after that is cancelled.
                if self._tasks:
                    _, late = await asyncio.wait(set(self._tasks), timeout=20)
                    for task in late:
                        task.cancel()
                    await asyncio.gather(*late, return_exceptions=True)
        finally:
            for p in sdk.values():
                await asyncio.to_thread(p.close)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, events: list[tuple[str, dict]], sdk: dict) -> None:
        bundles: dict[str, list[dict]] = {}
        for fid, res in events:
            res = self._spoil(res)
            if fid in sdk:
                sdk[fid].publish(res)
                self.counts.sdk += 1
            else:
                bundles.setdefault(fid, []).append(res)
        await asyncio.gather(*(self._post(fid, entries) for fid, entries in bundles.items()))
        if sdk:
            await asyncio.to_thread(lambda: [p.flush() for p in sdk.values()])

    async def _history(self, stop: asyncio.Event, sdk: dict) -> None:
        """The last weeks, as fast as the hub takes them (each chunk acknowledged first)."""
        for i in range(0, len(self.backlog), 400):
            if stop.is_set():
                return
            chunk = self.backlog[i:i + 400]
            await self._send(chunk, sdk)
            self.counts.history += len(chunk)
        self.backlog = []

    async def _catch_up(self, stop: asyncio.Event, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            runners = [r for r in self.hub.runners if r._consumer is not None]
            with contextlib.suppress(Exception):
                if runners and all([await r.caught_up() for r in runners]):
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _live(self, stop: asyncio.Event, sdk: dict) -> None:
        while not stop.is_set():
            started = time.monotonic()
            events = [self.population.next_event(clock.now())
                      for _ in range(max(1, round(self.rate * TICK)))]
            await self._send(events, sdk)
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - started)))

    async def _post(self, fid: str, entries: list[dict]) -> None:
        assert self._client is not None
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in entries]}
        try:
            resp = await self._client.post("/fhir", json=bundle, headers=self._auth(fid))
        except httpx.HTTPError:
            self.counts.gateway_refused += len(entries)
            self.counts.error("gateway unreachable")
            return
        if resp.status_code != 200:
            self.counts.gateway_refused += len(entries)
            return
        orders: dict[str, list[str]] = {}
        for res, e in zip(entries, resp.json().get("entry", []), strict=False):
            if not e["response"]["status"].startswith("201"):
                self.counts.gateway_refused += 1
                continue
            self.counts.gateway += 1
            items = order_items(res)
            if items:
                self.counts.orders += 1
                if self.phase == "live":
                    pid = res["subject"]["reference"].split("/")[1]
                    orders.setdefault(pid, []).extend(items)
        for pid, items in orders.items():  # the doctor who ordered them decides
            self._spawn(self._doctor(fid, pid, items))

    # --- the people: doctors ordering, readers reading ----------------------------------

    async def _doctor(self, fid: str, pid: str, items: list[str]) -> None:
        """The ordering doctor sees the recognition check and records a decision per item:
        recognise a qualifying prior result, or test again with a reason."""
        assert self._client is not None
        rng, client, headers = self.rng, self._client, self._auth(fid)
        patient = f"{fid}.{pid}"
        async with self._doctors:
            await asyncio.sleep(rng.uniform(0.3, 1.5))  # reading the prompt
            try:
                r = await client.post("/recognition/$check", headers=headers,
                                      json={"patient": f"Patient/{patient}", "items": items})
                if r.status_code != 200:
                    self.counts.error(f"$check {r.status_code}")
                    return
                self.counts.checks += 1
                for verdict in r.json()["items"]:
                    item = verdict["item"]
                    lab = isinstance(ITEMS.get(item, ("", 0, ""))[2], str)
                    if verdict["recognisable"] and rng.random() < RECOGNISE_SHARE:
                        best = verdict["recognisable"][0]["result"]
                        body = {"decision": "recognised",
                                "result": f"{'Observation' if lab else 'ImagingStudy'}/{best}"}
                    elif verdict["recognisable"]:
                        reason = rng.choices(list(RETEST_REASONS),
                                             list(RETEST_REASONS.values()))[0]
                        body = {"decision": "retested", "reason": reason}
                        if reason == "other":
                            body["text"] = "复诊医生要求本院复查"
                    else:
                        self.counts.why_not[_why_not(verdict.get("reason") or "")] += 1
                        body = {"decision": "retested", "reason": "no-qualified-result"}
                    d = await client.post("/recognition/decisions", headers=headers,
                                          json={"patient": patient, "item": item, **body})
                    if d.status_code != 201:
                        self.counts.error(f"decision {d.status_code}")
                        continue
                    if body["decision"] == "recognised":
                        self.counts.recognised += 1
                    else:
                        if body["reason"] == "no-qualified-result":
                            self.counts.not_counted += 1
                        else:
                            self.counts.retested += 1
                        self.population.fulfil(fid, pid, item)  # the test is done again
            except httpx.HTTPError:
                self.counts.error("doctor: API unreachable")

    async def _reading_centre(self, centre: str, stop: asyncio.Event) -> None:
        """The centre's desk looks at its worklist every few seconds; its readers take the
        most urgent unclaimed studies, claim them, read, and send their report."""
        assert self._client is not None
        queue: asyncio.Queue[dict] = asyncio.Queue()
        taken: set[str] = set()
        known = READERS.get(centre, ())
        names = [*known, *(f"{centre} 阅片医生{n}"
                           for n in range(len(known) + 1, READERS_PER_CENTRE + 1))]
        for name in names:
            self._spawn(self._reader(centre, name, queue, taken, stop))
        while not stop.is_set():
            try:
                r = await self._client.get("/imaging/worklist", headers=self._auth(centre))
                if r.status_code == 200:
                    for study in r.json()["studies"]:
                        if queue.qsize() >= 2 * READERS_PER_CENTRE:
                            break
                        if study["claim"] is None and study["study_id"] not in taken:
                            taken.add(study["study_id"])
                            queue.put_nowait(study)
            except httpx.HTTPError:
                self.counts.error("worklist: API unreachable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)

    async def _reader(self, centre: str, name: str, queue: asyncio.Queue, taken: set[str],
                      stop: asyncio.Event) -> None:
        assert self._client is not None
        rng, client, headers = self.rng, self._client, self._auth(centre)
        mine: list[dict] = []
        while not stop.is_set():
            try:
                study = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                continue
            try:
                c = await client.post(f"/imaging/studies/{study['study_id']}/claim",
                                      headers=headers, json={"reader": name, "minutes": 30})
                if c.status_code == 409:
                    self.counts.claims_lost += 1
                    continue
                if c.status_code == 503:
                    self.counts.claims_unsettled += 1
                    continue
                if c.status_code != 200:
                    self.counts.error(f"claim {c.status_code}")
                    continue
                self.counts.claims_won += 1
                await asyncio.sleep(rng.uniform(*READING_SECONDS))
                report = self.population.reading_report(
                    centre, study["study_id"], study["patient_key"], study["modality"],
                    study["description"], study["started"], clock.now(), reader=name, rng=rng)
                if await self._put(centre, report):
                    self.counts.reports += 1
                    mine.append(report)
                    del mine[:-20]
                if mine and rng.random() < 0.03:  # a second look: the report is amended
                    old = mine.pop(rng.randrange(len(mine)))
                    if await self._put(centre, self.population.amendment(old, clock.now(), rng)):
                        self.counts.reports += 1
            except httpx.HTTPError:
                self.counts.error("reader: API unreachable")
            finally:
                taken.discard(study["study_id"])

    async def _put(self, fid: str, res: dict) -> bool:
        assert self._client is not None
        r = await self._client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res,
                                   headers=self._auth(fid))
        if r.status_code not in (200, 201):
            self.counts.error(f"PUT {res['resourceType']} {r.status_code}")
            return False
        return True


# --- what the summary shows ------------------------------------------------------------------

_IMG = ImagingProjection().tables(sa.MetaData())
_LAB = LabProjection().tables(sa.MetaData())[RESULTS]
_MPI = MpiProjection().tables(sa.MetaData())
_REC = RecognitionProjection().tables(sa.MetaData())


def journal_counts(store: Store) -> dict[tuple[bool, str, str], int]:
    """(hub's own?, facility, resource type) -> events in the journal."""
    prefix = len("urn:hie:facility:")
    out: dict[tuple[bool, str, str], int] = {}
    with store.connect() as conn:
        for source, etype, n in conn.execute(
                sa.select(journal.c.source, journal.c.type, sa.func.count())
                .group_by(journal.c.source, journal.c.type)):
            own = source == HUB_SOURCE
            key = (own, "hub" if own else source[prefix:], etype.split(".")[1])
            out[key] = out.get(key, 0) + int(n)
    return out


@dataclass
class Figures:
    at: float
    journal: dict[tuple[bool, str, str], int]
    records: int
    persons: int
    reviews: int
    lab_results: int
    lab_abnormal: int
    worklists: dict[str, tuple[int, int, int]]  # centre -> (waiting, breached, claimed)
    reported: int
    turnaround: tuple[int, float | None, float | None]  # last 24 h: reports, p50, p90
    orders: int
    prompts: dict[str, int]
    decisions: tuple[int, int, int, float]  # recognised, retested, not counted, yuan saved
    monitoring: dict[str, int]  # alerts per status, readings, escalated, referred

    @property
    def journal_total(self) -> int:
        return sum(self.journal.values())


def gather_figures(hub: Hub, centres: list[str]) -> Figures:
    """Everything the summary shows, read from the store (in a worker thread)."""
    assert hub.store is not None and hub.directory is not None
    store = hub.store
    registry = {f.id: f.record for f in hub.directory}
    now = clock.now()
    with store.connect() as conn:
        link, review = _MPI["mpi_link"], _MPI["mpi_review"]
        records = conn.execute(sa.select(sa.func.count()).select_from(link)).scalar_one()
        persons = conn.execute(sa.select(sa.func.count(sa.distinct(link.c.person_id)))
                               ).scalar_one()
        reviews = conn.execute(sa.select(sa.func.count()).select_from(review)
                               .where(review.c.status == "requested")).scalar_one()
        results, abnormal = conn.execute(sa.select(
            sa.func.count(), sa.func.sum(sa.case((_LAB.c.flag.in_(
                ("H", "HH", "L", "LL", "A", "AA")), 1), else_=0)))
            .where(_LAB.c.visible.is_(True))).one()
        s, f = _IMG[STUDIES], _IMG[FIRST]
        since = (now - timedelta(hours=24)).isoformat().replace("+00:00", "Z")
        minutes = []
        for started, arrived, issued in conn.execute(
                sa.select(s.c.started, s.c.arrived, f.c.issued)
                .select_from(s.join(f, f.c.study_id == s.c.study_id))
                .where(f.c.issued >= since)):
            begin = _instant(started or arrived)
            minutes.append((_instant(issued) - begin).total_seconds() / 60)
        reported = conn.execute(sa.select(sa.func.count()).select_from(f)).scalar_one()
        orders = conn.execute(sa.select(sa.func.count()).select_from(_REC[ORDERS])
                              ).scalar_one()
        prompts = dict(conn.execute(
            sa.select(recognition_prompts.c.status, sa.func.count())
            .group_by(recognition_prompts.c.status)).all())
        st = _REC[STATS]
        rec, ret, nc, fen = conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(st.c.recognised), 0),
            sa.func.coalesce(sa.func.sum(st.c.retested), 0),
            sa.func.coalesce(sa.func.sum(st.c.not_counted), 0),
            sa.func.coalesce(sa.func.sum(st.c.saved_fen), 0))).one()
    worklists = {}
    for centre in centres:
        items = imaging_read.worklist(store, registry, centre, now=now)
        worklists[centre] = (len(items), sum(i["breached"] for i in items),
                             sum(i["claim"] is not None for i in items))
    return Figures(
        time.monotonic(), journal_counts(store), records, persons, reviews, int(results),
        int(abnormal or 0), worklists, reported,
        (len(minutes), imaging_rules.percentile(minutes, 50),
         imaging_rules.percentile(minutes, 90)),
        orders, {k: int(v) for k, v in prompts.items()},
        (int(rec), int(ret), int(nc), int(fen) / 100), monitoring_read.counts(store))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Summary:
    """Counts, rates and lags, explained; refreshed from the store and the runners."""

    def __init__(self, hub: Hub, sim: ConsortiumSimulator,
                 before: dict[tuple[bool, str, str], int]) -> None:
        self.hub = hub
        self.sim = sim
        self.before = before
        self.started = time.monotonic()
        self.first: Figures | None = None
        self.last: Figures | None = None
        self.previous: Figures | None = None
        self._applied_prev: dict[str, int] = {}
        self.applied_rate: dict[str, float] = {}
        self.referral_lines: list[str] = []
        self.meters: HomeMeters | None = None

    async def refresh(self) -> Figures:
        for r in self.hub.runners:  # how far each projection is behind the log
            if r._consumer is not None:
                with contextlib.suppress(Exception):
                    await r.caught_up()
        figures = await asyncio.to_thread(gather_figures, self.hub, self.sim.centres)
        assert self.hub.store is not None and self.hub.directory is not None
        self.referral_lines = await asyncio.to_thread(
            referral_lines, self.hub.store, {f.id: f.record for f in self.hub.directory},
            referral_policy(self.hub.settings))
        if self.last is not None:
            dt = max(1e-6, figures.at - self.last.at)
            self.applied_rate = {r.projection.name: max(0.0, (
                r.stats.applied - self._applied_prev.get(r.projection.name, 0)) / dt)
                for r in self.hub.runners}
        self._applied_prev = {r.projection.name: r.stats.applied for r in self.hub.runners}
        self.previous, self.last = self.last, figures
        self.first = self.first or figures
        return figures

    # -- numbers --

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def journal_rate(self) -> float:
        f, p = self.last, self.previous
        if f is None or p is None:
            return 0.0
        return max(0.0, (f.journal_total - p.journal_total) / max(1e-6, f.at - p.at))

    def this_run(self) -> tuple[dict, dict]:
        """(facility events, the hub's own events) journaled during this run, by key."""
        assert self.last is not None
        fac, own = {}, {}
        for key, n in self.last.journal.items():
            d = n - self.before.get(key, 0)
            if d:
                (own if key[0] else fac)[key] = d
        return fac, own

    def lags(self) -> list[tuple[str, int, int, float]]:
        """(projection, applied this run, lag in events, applied per second lately)."""
        return [(r.projection.name, r.stats.applied, r.stats.lag,
                 self.applied_rate.get(r.projection.name, 0.0)) for r in self.hub.runners]

    # -- rendering --

    def status_line(self) -> str:
        f, c, sim = self.last, self.sim.counts, self.sim
        assert f is not None
        phase = (f"history {c.history:,}/{sim.history_total:,}" if sim.phase == "history"
                 else sim.phase)
        worst = max(self.lags(), key=lambda x: x[2], default=("-", 0, 0, 0.0))
        waiting = sum(w[0] for w in f.worklists.values())
        breached = sum(w[1] for w in f.worklists.values())
        rec, ret, nc, _ = f.decisions
        return (f"[{self.elapsed():5.0f}s] {phase} · journal {f.journal_total:,} "
                f"(+{self.journal_rate():,.0f}/s) · max lag {worst[2]:,} ({worst[0]}) · "
                f"lab {f.lab_results:,} · worklist {waiting:,} ({breached:,} breached) · "
                f"reported {f.reported:,} · orders {f.orders:,}, prompts "
                f"{f.prompts.get('open', 0) + f.prompts.get('withdrawn', 0):,}, decisions "
                f"{rec + ret + nc:,} · home readings {f.monitoring['readings']:,}, alerts "
                f"{f.monitoring['open']:,} open")

    def render(self, final: bool = False) -> Group:
        f, c, hub, sim = self.last, self.sim.counts, self.hub, self.sim
        assert f is not None
        elapsed = self.elapsed()
        fac, own = self.this_run()
        fac_n, own_n = sum(fac.values()), sum(own.values())
        before_n = sum(self.before.values())
        ingest = hub.ingest.stats if hub.ingest else None
        sdk_accepted = ingest.accepted if ingest else 0
        refs = sim.referrals.counts
        meters = self.meters
        readings = (meters.answers["201"] + meters.answers["mqtt"]) if meters else 0
        team_actions = sum(n for k, n in meters.actions.items() if " " not in k) \
            if meters else 0
        # A referral from an alert is three events (ServiceRequest, Task, the alert's Task).
        team_events = team_actions + 2 * (meters.actions["referred"] if meters else 0)
        accepted = c.gateway + c.reports + sdk_accepted + c.through_api + refs.published + \
            readings + team_events
        phase = (f"history {c.history:,}/{sim.history_total:,} sent"
                 if sim.phase == "history" else sim.phase)
        rate = "" if final else f", {self.journal_rate():,.0f}/s now"
        prompts = f.prompts
        rec, ret, nc, saved = f.decisions
        lines = [
            f"{'ran' if final else 'running'} {elapsed:.0f}s ({phase}): journal "
            f"{f.journal_total:,} events{rate}, {(fac_n + own_n) / max(elapsed, 1e-6):,.0f}/s "
            "this run on average",
            f"journal {f.journal_total:,} = earlier runs {before_n:,} + this run: facilities "
            f"{fac_n:,} + hub's own {own_n:,}",
            f" facilities: accepted {accepted:,}, of which {max(0, accepted - fac_n):,} not "
            "yet journaled",
            f"   gateway: {c.gateway:,} from facility systems, {c.reports:,} readers' reports",
            f"   SDK: {sdk_accepted:,} accepted by the ingest stage ({c.sdk:,} sent, "
            f"{ingest.rejected if ingest else 0:,} refused)",
            f"   API: {c.claims_won + c.claims_lost + c.claims_unsettled:,} readers' claims, "
            f"{rec_n(c):,} doctors' decisions, {refs.steps:,} referral steps, "
            f"{team_events:,} family-doctor team events",
            f"   referrals: {refs.sent_up:,} up and {refs.sent_down:,} down sent through the "
            f"gateway; {refs.lost:,} simultaneous accepts lost",
            f"   devices: {readings:,} home readings accepted"
            + (" (sent over MQTT; refusals are dead letters)" if meters and meters.mqtt
               else ""),
            " hub's own: " + (", ".join(
                f"{t} {n:,} ({EVENT_TYPE_HUB.get(t, 'hub')})"
                for t, n in sorted(_by_type(own).items())) or "none yet"),
            f" refused by the gateway: {c.gateway_refused:,} ({c.spoiled:,} sent invalid on "
            "purpose)",
            f"patient index: {f.records:,} records linked into {f.persons:,} residents, "
            f"{f.reviews:,} open reviews",
            f"lab: {f.lab_results:,} results shown, {f.lab_abnormal:,} abnormal; "
            f"{hub.settings.topics.lab}: "
            f"{hub.feeds['lab'].sent if 'lab' in hub.feeds else 0:,} sent this run",
            *(f"worklist {centre}: {w:,} waiting, {b:,} past their SLA, {cl:,} claimed"
              for centre, (w, b, cl) in f.worklists.items()),
            f"reading: {f.reported:,} studies reported; readers claimed {c.claims_won:,} "
            f"({c.claims_lost:,} lost)",
            f"turnaround, last 24 h: {f.turnaround[0]:,} reports, p50 "
            f"{_minutes(f.turnaround[1])}, p90 {_minutes(f.turnaround[2])}",
            f"recognition: {f.orders:,} orders; prompts {prompts.get('open', 0):,} open, "
            f"{prompts.get('withdrawn', 0):,} withdrawn",
            f" decisions: {rec:,} recognised, {ret:,} re-tested, {nc:,} not counted; "
            f"{saved:,.0f} yuan saved",
            *self.monitoring_lines(f),
        ]
        lines += self.referral_lines
        if c.why_not:
            lines.append(" nothing to recognise (this run): " + ", ".join(
                f"{label} {n:,}" for label, n in c.why_not.most_common()))
        errors = {**c.errors, **refs.errors}
        if errors:
            lines.append("errors: " + ", ".join(f"{k} ×{n}" for k, n in sorted(errors.items())))
        types = Table(title="accepted events by type")
        types.add_column("resource type")
        types.add_column("this run", justify="right")
        types.add_column("all runs", justify="right")
        total = _by_type({k: v for k, v in f.journal.items() if not k[0]})
        run = _by_type(fac)
        for rtype in sorted(total):
            types.add_row(rtype, f"{run.get(rtype, 0):,}", f"{total[rtype]:,}")
        tiers = Table(title="by tier")
        tiers.add_column("tier")
        tiers.add_column("this run", justify="right")
        per_tier: dict[str, int] = {}
        for (_, fid, _), n in fac.items():
            tier = sim.tiers.get(fid, "?")
            per_tier[tier] = per_tier.get(tier, 0) + n
        for tier, n in sorted(per_tier.items()):
            tiers.add_row(tier, f"{n:,}")
        lag = Table(title="projections")
        lag.add_column("projection")
        lag.add_column("applied this run", justify="right")
        lag.add_column("ev/s (average)" if final else "ev/s now", justify="right")
        lag.add_column("lag", justify="right")
        for name, applied, behind, rate in self.lags():
            if final:
                rate = applied / max(elapsed, 1e-6)
            lag.add_row(name, f"{applied:,}", f"{rate:,.0f}", f"{behind:,}")
        note = Text("Every projection reads every event of the log (most ignore the types "
                    "that are not theirs), so 'applied' is the same for all once they are "
                    "caught up; lag = events in the log not yet applied.", style="dim")
        return Group(Panel("\n".join(lines), title="hub demo"), types, tiers, lag, note)


    def monitoring_lines(self, f: Figures) -> list[str]:
        m, meters = f.monitoring, self.meters
        sent = sum(meters.sent.values()) if meters else 0
        answers = ", ".join(f"{k} {n:,}" for k, n in sorted(meters.answers.items())) \
            if meters else ""
        actions = ", ".join(f"{k} {n:,}" for k, n in sorted(meters.actions.items())) \
            if meters else ""
        feed = self.hub.feeds.get("monitoring")
        return [
            f"remote monitoring: {m['readings']:,} home readings; alerts {m['open']:,} open, "
            f"{m['acknowledged']:,} acknowledged, {m['resolved']:,} resolved; "
            f"{m['escalated']:,} escalated, {m['referred']:,} referred up; "
            f"{self.hub.settings.topics.alerts}: {feed.sent if feed else 0:,} sent this run",
            f" meters: {sent:,} readings sent this run ({answers or 'none yet'}); "
            f"doctors: {actions or 'nothing yet'}"]


def _why_not(reason: str) -> str:
    """A short label for the check's reason why no prior result qualified."""
    for words, label in ((("no prior result",), "no result on file"),
                         (("expired",), "expired"), (("EQA",), "no EQA pass"),
                         (("or above",), "tier too low"),
                         (("amended", "corrected", "retracted", "not final", "cancelled"),
                          "not final or not reported"),
                         (("after the order",), "dated after the order")):
        if any(w in reason for w in words):
            return label
    return "other"


def rec_n(c: Counts) -> int:
    return c.recognised + c.retested + c.not_counted


def _by_type(counts: dict[tuple[bool, str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, _, rtype), n in counts.items():
        out[rtype] = out.get(rtype, 0) + n
    return out


def _minutes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} min" if value < 120 else f"{value / 60:.1f} h"


# --- the command ------------------------------------------------------------------------------


async def run_demo(settings: Settings, console: Console, seconds: float | None,
                   rate: float, fresh: bool = False, history_events: int = HISTORY_EVENTS,
                   seed: int = 7, mqtt: str | None = None) -> None:
    """Run the hub and the simulated consortium for ``seconds`` (None: until cancelled).

    ``fresh``: clear the data directory's store and start a new story; otherwise a store
    left by an earlier run is continued. ``history_events``: how many events back-fill the
    last two weeks on a fresh start (fewer when continuing a recent story). ``mqtt``: the
    MQTT broker the demo's home meters publish to, through the hub's device gateway
    (without it they post over HTTP).
    """
    removed = clear_store(settings) if fresh else []
    state = load_state(settings.data_dir)
    async with Hub(settings) as hub:
        assert hub.store is not None and hub.directory is not None
        before = await asyncio.to_thread(journal_counts, hub.store)
        used = await asyncio.to_thread(used_ids, hub.store) if before else {}
        if not before:
            state = None  # an empty store (removed by hand?) starts a new story
        hub.start_api()
        hub.start_registry_watch()
        hub.start_ingest()
        hub.start_projections()
        await hub.api_ready()
        key_file = write_sdk_key(settings, hub.directory.get(SDK_FACILITY))
        sim = ConsortiumSimulator(hub, rate, seed, history_events, state, used)
        _print_start(console, settings, sim, sum(before.values()), fresh, removed, state,
                     key_file, seconds)
        summary = Summary(hub, sim, before)
        stop = asyncio.Event()
        sim_task = asyncio.create_task(sim.run(stop))
        meter_client = await _meter_link(hub, mqtt)
        summary.meters = HomeMeters(
            hub.care, f"http://127.0.0.1:{settings.api_port}",
            {f.id: f.token for f in hub.directory}, seed, meter_client,
            settings.monitoring.mqtt_topic.split("hie/devices/")[0])
        meters_task = asyncio.create_task(summary.meters.run(stop))
        await summary.refresh()
        try:
            await _watch(console, summary, sim_task, seconds)
            stop.set()
            await sim_task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(meters_task, 10)
            # Let the projections take in the last events before stopping.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if all([await r.caught_up() for r in hub.runners if r._consumer]):
                    break
                await asyncio.sleep(0.5)
            await summary.refresh()
            console.print(summary.render(final=True))
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(sim_task, 10)
            meters_task.cancel()
            if meter_client is not None:
                meter_client.disconnect()
                meter_client.loop_stop()
            save_state(settings.data_dir, sim.state())
    console.print(f"\n[green]demo stopped cleanly[/green]; {_shown(settings.data_dir)} keeps "
                  "the story: run the demo again to continue it, or with --fresh to start "
                  "over", soft_wrap=True)


async def _meter_link(hub: Hub, mqtt: str | None) -> Any:
    """With ``mqtt``: start the hub's device gateway on it, and connect the demo's meters
    there (a paho client, as a meter's firmware would use). Without: None (HTTP)."""
    if not mqtt:
        return None
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from adapters.devices.mqtt import MqttAddress

    await hub.start_mqtt(mqtt)
    address = MqttAddress.parse(mqtt)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="hub-demo-meters")
    client.connect(address.host, address.port)
    client.loop_start()
    return client


async def _watch(console: Console, summary: Summary, sim_task: asyncio.Task,
                 seconds: float | None) -> None:
    """Until ``seconds`` pass or Ctrl-C: a live display on a terminal, else a status line
    every few seconds (a log file gets readable lines, not redraws)."""
    started = time.monotonic()

    def running() -> bool:
        return seconds is None or time.monotonic() - started < seconds

    async def tick(every: float) -> None:
        await asyncio.sleep(min(every, max(0.05, seconds - (time.monotonic() - started)))
                            if seconds is not None else every)
        if sim_task.done():
            sim_task.result()  # surface a simulator crash
        await summary.refresh()

    try:
        if console.is_terminal:
            with Live(summary.render(), console=console, refresh_per_second=2) as live:
                while running():
                    await tick(1.0)
                    live.update(summary.render())
        else:
            console.print(summary.status_line(), soft_wrap=True, markup=False,
                          highlight=False)
            while running():
                await tick(STATUS_EVERY)
                console.print(summary.status_line(), soft_wrap=True, markup=False,
                              highlight=False)
    except asyncio.CancelledError:
        # Ctrl-C: stop publishing, let the projections drain, then shut down.
        asyncio.current_task().uncancel()
        console.print("stopping: draining the projections ...")


def _print_start(console: Console, settings: Settings, sim: ConsortiumSimulator,
                 journaled: int, fresh: bool, removed: list[Path], state: dict | None,
                 key_file: Path | None, seconds: float | None) -> None:
    """Where to look. One command per line, never wrapped (copy-paste must work at any
    terminal width)."""
    base = f"http://{settings.api_host}:{settings.api_port}"
    hub = hub_command()
    if journaled == 0:
        story = "fresh start" + (f" (removed {', '.join(_shown(p) for p in removed)})"
                                 if removed else "")
    else:
        story = (f"continuing the story from {journaled:,} journaled events (run "
                 f"{sim.runs})" + ("" if state else "; no " + STATE_FILE +
                                   ": new residents only, ids after those in the store"))
    n = sim.history_total
    history = (f"back-filling {n:,} event{'s' if n != 1 else ''} of history up to now, then "
               "live" if n else "live from now")
    say = lambda text="", style=None: console.print(  # noqa: E731
        Text(text, style=style) if style else Text(text), soft_wrap=True)
    say(f"hub demo: {story}; {history}", "bold")
    say(f"  Kafka{' (bundled, memory only)' if settings.embedded else ''}: "
        f"{settings.bootstrap}")
    say(f"  store: {settings.db_url}")
    say(f"  FHIR API: {base}/fhir   docs: {base}/docs")
    say(f"  web console: {base}/console (log in with demo-app-token-consortium-ops, or a "
        "facility's demo-secret-<id>)")
    say(f"  metrics: curl -H 'Authorization: Bearer demo-app-token-hub-monitor' "
        f"{base}/metrics")
    if key_file is not None:
        say(f"  SDK: kid {demo_signer(SDK_FACILITY).kid}, private key {_shown(key_file)} "
            "(see README, Signed provenance)")
    patient = sim.example_patient()
    say("Try (one command per line):")
    for token, path in (
            ("city-1", f"/fhir/Observation?patient=Patient/{patient}"),
            ("city-1", f"/fhir/Patient/{patient}/$lab-summary"),
            ("county-1", "/imaging/worklist"),
            ("county-1", "/imaging/turnaround?by=modality"),
            ("city-1", "/recognition/statistics"),
            ("county-1", "/referrals/incoming"),
            ("city-1", "/referrals/statistics"),

            ("community-1", "/monitoring/worklist"),
            ("city-1", "/monitoring/worklist?escalated=true"),
            ("city-1", "/monitoring/patients/community-1.home-01")):
        say(f"  curl -H 'Authorization: Bearer demo-secret-{token}' '{base}{path}'")
    say(f"  {hub} mpi reviews --url {base} --token demo-secret-city-1")
    say(f"  {hub} recognition check --patient {patient} --items GLU,HBA1C,CT-HEAD "
        f"--url {base} --token demo-secret-city-1")
    say(f"  {hub} deadletters --db {settings.db_url}")
    say("Ctrl-C stops." if seconds is None else f"Stops after {seconds:g}s.")


def _has_demo_key(f: Facility) -> bool:
    key = f.record.current_key()
    return key is not None and key.kid == demo_signer(f.id).kid and \
        key.public_key == demo_signer(f.id).public_key
