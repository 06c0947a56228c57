"""The demo's two-way referrals: grassroots doctors refer patients up, the receiving
hospitals' desks work their incoming worklist (two clinicians sometimes accept the same
referral at once; one wins), record the arrival and the discharge, and send most patients
back down for rehabilitation. Requests go through the FHIR gateway, steps through the
referral API, as a facility's systems would do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from hub.demo.population import PopulationSimulator
from hub.referral import read, rules
from hub.registry.model import FacilityRecord
from hub.store.db import Store

REFERRAL_EVERY = (3.0, 8.0)  # seconds between two up-referrals
DESK_EVERY = 2.0
SENDER_TIERS = ("village-clinic", "township-centre", "community-centre")
SERVICES = {"cardiology": 35, "internal-medicine": 25, "surgery": 15, "neurology": 10,
            "obstetrics": 8, "oncology": 7}
PRIORITIES = {"stat": 10, "asap": 10, "urgent": 30, "routine": 50}
REASONS = {"cardiology": "胸痛待查，心电图ST段改变", "internal-medicine": "血糖控制不佳",
           "surgery": "腹痛待查", "neurology": "头晕伴肢体麻木", "obstetrics": "高危妊娠",
           "oncology": "肺部结节待查"}
REJECTIONS = {"no-capacity": 3, "incomplete": 1, "wrong-service": 1}
CLINICIANS = {"city-1": ("陈医生", "赵医生"), "county-1": ("王医生", "李医生")}
# What a desk does with a new referral: accept, reject, or leave it waiting (a busy desk:
# stat referrals left waiting show the green channel's SLA being missed).
ACCEPT, REJECT = 0.75, 0.1
BOTH_ACCEPT = 0.2  # two clinicians click "accept" at once
DOWN_SHARE = 0.7  # discharged patients sent back down for rehabilitation


@dataclass
class ReferralCounts:
    sent_up: int = 0
    sent_down: int = 0
    steps: int = 0  # accepted by the referral API (200 or 409: both are events)
    lost: int = 0  # the second of two simultaneous accepts
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def published(self) -> int:
        return self.sent_up + self.sent_down + self.steps

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class ReferralDesks:
    """Senders at the grassroots, desks at every facility that receives referrals."""

    def __init__(self, population: PopulationSimulator, tokens: Mapping[str, str],
                 registry: Callable[[], Mapping[str, FacilityRecord]], seed: int) -> None:
        self.population = population
        self.tokens = tokens
        self.registry = registry
        self.rng = random.Random(seed)
        self.counts = ReferralCounts()
        self._decided: set[str] = set()

    def _auth(self, fid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[fid]}"}

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        # Every member has a desk: a village clinic receives its patients back down.
        desks = sorted(fid for fid in self.registry() if fid in self.tokens)
        await asyncio.gather(self._senders(client, stop),
                             *(self._desk(client, fid, stop) for fid in desks))

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _senders(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        senders = sorted(f.id for f in self.registry().values()
                         if f.tier in SENDER_TIERS and f.id in self.tokens)
        while not stop.is_set():
            await self._pause(stop, self.rng.uniform(*REFERRAL_EVERY))
            sender = self.rng.choice(senders)
            found = self.population.patient_with_results(sender, self.rng)
            if found is None:
                continue
            pid, evidence = found
            service = self.rng.choices(list(SERVICES), list(SERVICES.values()))[0]
            priority = self.rng.choices(list(PRIORITIES), list(PRIORITIES.values()))[0]
            sr = referral(self.population.new_id(sender, "ref"), f"Patient/{pid}", service,
                          priority, "up", REASONS[service],
                          [f"Observation/{oid}" for oid in evidence])
            if await self._put(client, sender, sr):
                self.counts.sent_up += 1

    async def _desk(self, client: httpx.AsyncClient, fid: str, stop: asyncio.Event) -> None:
        """Every few seconds: decide on new referrals, admit the accepted ones, discharge
        the admitted ones (and refer them back down)."""
        while not stop.is_set():
            await self._pause(stop, DESK_EVERY)
            try:
                r = await client.get("/referrals/incoming", headers=self._auth(fid))
                if r.status_code != 200:
                    self.counts.error(f"incoming {r.status_code}")
                    continue
                for item in r.json()["referrals"]:
                    await self._work(client, fid, item)
            except httpx.HTTPError:
                self.counts.error("referral desk: API unreachable")

    async def _work(self, client: httpx.AsyncClient, fid: str, item: dict) -> None:
        rid, state, rng = item["id"], item["state"], self.rng
        names = CLINICIANS.get(fid, (f"{fid} 医生甲", f"{fid} 医生乙"))
        if state == rules.REQUESTED and rid not in self._decided:
            self._decided.add(rid)
            draw = rng.random()
            if draw < ACCEPT:
                who = [names[0], names[1]] if rng.random() < BOTH_ACCEPT else [names[0]]
                await asyncio.gather(*(self._step(client, fid, rid, "accept", {"clinician": n})
                                       for n in who))
            elif draw < ACCEPT + REJECT:
                reason = rng.choices(list(REJECTIONS), list(REJECTIONS.values()))[0]
                await self._step(client, fid, rid, "reject",
                                 {"clinician": names[0], "reason": reason})
        elif state == rules.ACCEPTED and rng.random() < 0.5:
            await self._step(client, fid, rid, "arrive", {})
        elif state == rules.IN_PROGRESS and rng.random() < 0.4:
            done = await self._step(client, fid, rid, "complete", {})
            if done and item["direction"] == "up" and rng.random() < DOWN_SHARE:
                patient = item["patient"]
                sr = referral(self.population.new_id(fid, "ref"), patient, "rehabilitation",
                              "routine", "down", "术后康复", [], closes=rid)
                if await self._put(client, fid, sr):
                    self.counts.sent_down += 1

    async def _step(self, client: httpx.AsyncClient, fid: str, rid: str, action: str,
                    body: dict) -> bool:
        r = await client.post(f"/referrals/{rid}/{action}", json=body, headers=self._auth(fid))
        if r.status_code in (200, 409):
            self.counts.steps += 1
            self.counts.lost += r.status_code == 409 and action == "accept"
        else:
            self.counts.error(f"{action} {r.status_code}")
        return r.status_code == 200

    async def _put(self, client: httpx.AsyncClient, fid: str, res: dict) -> bool:
        r = await client.put(f"/fhir/ServiceRequest/{res['id']}", json=res,
                             headers=self._auth(fid))
        if r.status_code not in (200, 201):
            self.counts.error(f"PUT ServiceRequest {r.status_code}")
            return False
        return True


def referral(rid: str, patient: str, service: str, priority: str, direction: str,
             reason: str, evidence: list[str], closes: str | None = None) -> dict:
    """A referral as a facility's HIS writes it (FHIR R4B ServiceRequest)."""
    sr = {"resourceType": "ServiceRequest", "id": rid, "status": "active", "intent": "order",
          "priority": priority,
          "category": [{"coding": [{"system": rules.REFERRAL_CATEGORY[0],
                                    "code": rules.REFERRAL_CATEGORY[1],
                                    "display": "Patient referral"},
                                   {"system": rules.DIRECTION_SYSTEM, "code": direction}]}],
          "code": {"coding": [{"system": rules.SERVICE_SYSTEM, "code": service}]},
          "subject": {"reference": patient}, "reasonCode": [{"text": reason}]}
    if evidence:
        sr["supportingInfo"] = [{"reference": ref} for ref in evidence]
    if closes:
        sr["basedOn"] = [{"reference": f"ServiceRequest/{closes}"}]
    return sr


def summary_lines(store: Store, registry: Mapping[str, FacilityRecord],
                  policy: rules.Policy) -> list[str]:
    """What the demo's summary says about referrals, from the referral projection."""
    folded = read.load(store, registry, policy)
    if not folded:
        return ["referrals: none yet"]
    by_state: dict[str, int] = {}
    for f in folded:
        by_state[f.referral.state] = by_state.get(f.referral.state, 0) + 1
    up = sum(f.request.direction == "up" for f in folded)
    lines = [f"referrals: {up:,} up, {len(folded) - up:,} down; " + ", ".join(
        f"{n:,} {s}" for s, n in sorted(by_state.items()))]
    desks: dict[str, tuple[int, int]] = {}
    for f in folded:
        if f.referral.state not in rules.OPEN:
            continue
        for fid in ([f.referral.holder] if f.referral.holder else f.receivers):
            n, b = desks.get(fid, (0, 0))
            desks[fid] = (n + 1, b + f.breached)
    lines += [f" incoming {fid}: {n:,} open, {b:,} past their acceptance SLA"
              for fid, (n, b) in sorted(desks.items())]
    for row in read.statistics(store, registry, policy):
        median = row["median_minutes_to_acceptance"]
        lines.append(f" {row['month']} {row['tier']}: {row['up_referrals']:,} up, "
                     f"{row['closure_rate']:.0%} closed by a down-referral, median "
                     f"{'-' if median is None else f'{median:g} min'} to acceptance")
    return lines
