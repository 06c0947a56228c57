"""The patient-index service: decides links as Patient records arrive, and carries out the
decisions people make (confirm or reject a review, unlink, merge).

It is the single writer of the index's decisions, which are Person and Task events on the
log (key ``mpi``: one partition, so they keep their order). It holds the ledger in memory,
loaded from the ``mpi`` projection once that projection has caught up with the log, and
applies its own decisions to it as it publishes them. A crash before the projection folds
them is harmless: on restart the same state gives the same decisions with the same event
ids, which the log's consumers skip when they see them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

import orjson
import sqlalchemy as sa

from hub.config import Settings
from hub.engine.acks import JournalAcks, publish_durably
from hub.envelope import HUB_SOURCE, Envelope, now_rfc3339
from hub.errors import HubError
from hub.log.producer import Publisher
from hub.mpi.demographics import from_row
from hub.mpi.ledger import Ledger, fold_into, person_records
from hub.mpi.matching import CandidateIndex, Decision, resolve
from hub.mpi.projection import DECIDED, LINKS, PERSONS, RECORDS, REVIEWS, MpiProjection
from hub.signing import Signer
from hub.store import lease
from hub.store.db import Store, plain

log = logging.getLogger(__name__)
MPI_KEY = "mpi"
LEASE = "mpi-writer"
LEASE_TTL = 15.0  # seconds without renewal before another replica takes over


class MpiError(HubError):
    """A patient-index request that cannot be carried out (unknown record, closed review)."""


class NotLeader(HubError):
    """Another hub replica holds the patient index's writer lease."""


@functools.cache
def _tables() -> dict[str, sa.Table]:
    # Built once: building Table objects costs milliseconds, and reads call this per request.
    return MpiProjection().tables(sa.MetaData())


class MpiService:
    def __init__(self, settings: Settings, store: Store, publisher: Publisher,
                 signer: Signer, caught_up: Callable[[], Awaitable[bool]],
                 acks: JournalAcks | None = None) -> None:
        self.settings = settings
        # A reviewer's decision is answered 200 only once it is as durable as any other
        # acknowledged event (the journal's commit, with the bundled broker).
        self.acks = acks
        self.store = store
        self.publisher = publisher
        self.signer = signer
        self._caught_up = caught_up
        self.ledger = Ledger()
        self.index = CandidateIndex()
        self.t = _tables()
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.decided = 0
        self.leader = False
        self.holder = lease.holder_name("mpi")

    def stop(self) -> None:
        self._stop.set()

    async def ready(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    # --- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if not await self._lead():
                        await self._sleep(LEASE_TTL / 3)
                        continue
                    n = await self.match_pending()
                except HubError as exc:  # the store or broker is away: try again shortly
                    log.warning("patient index: %s; retrying", exc)
                    n = 0
                if not n:
                    await self._sleep(self.settings.mpi_poll_seconds)
        finally:
            if self.leader:
                await asyncio.to_thread(lease.release, self.store, LEASE, self.holder)

    async def _lead(self) -> bool:
        """Hold the writer's lease; on taking it, load the state the log holds so far."""
        held = await asyncio.to_thread(lease.acquire, self.store, LEASE, self.holder,
                                       LEASE_TTL)
        if held and not self.leader:
            while not self._stop.is_set() and not await self._caught_up():
                await self._sleep(0.2)
            await asyncio.to_thread(self._load)
            log.info("patient index: %s decides links now", self.holder)
        self.leader = held
        if held:
            self._ready.set()
        return held

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _load(self) -> None:
        t = self.t
        with self.store.connect() as conn:
            bodies = [orjson.loads(b) for (b,) in conn.execute(
                sa.select(t[PERSONS].c.body).order_by(t[PERSONS].c.seq))]
            bodies += [orjson.loads(b) for (b,) in conn.execute(
                sa.select(t[REVIEWS].c.body).order_by(t[REVIEWS].c.seq))]
            rows = conn.execute(sa.select(t[RECORDS])).mappings().all()
        bodies.sort(key=lambda r: int(r["meta"]["versionId"]))
        self.ledger = Ledger()
        fold_into(self.ledger, bodies)
        self.index = CandidateIndex()
        for row in rows:
            person = self.ledger.person_of.get(row["record_key"])
            if person is not None:
                self.index.add(from_row(row), person)

    async def match_pending(self) -> int:
        """Decide every record that is new or changed since its last decision."""
        rows = await asyncio.to_thread(pending, self.store)
        if not rows:
            return 0
        async with self._lock:
            out: list[dict] = []
            for row in rows:
                out += self._decide(row)
            await self._publish(out)
        self.decided += len(rows)
        return len(rows)

    def _decide(self, row: dict) -> list[dict]:
        d = from_row(row)
        key = d.record_key
        marker = f"{key}@{row['order_key']}"
        ledger = self.ledger
        current = ledger.person_of.get(key)
        if current is not None and len(ledger.persons.get(current, ())) > 1:
            # Already linked with others: a changed demographic never moves it silently.
            self.index.add(d, current)
            return ledger.ensure(key, decided=marker)
        res = resolve(d, self.index.candidates(d))
        reasons = ", ".join(res.match.reasons) if res.match else ""
        if res.kind is Decision.LINK and res.person is not None:
            out = ledger.link(key, ledger.survivor(res.person), decided=marker,
                              note=f"matched {res.against}: {reasons}")
        else:
            out = ledger.ensure(key, decided=marker, note="new record")
            if res.kind in (Decision.REVIEW, Decision.CONFLICT) and res.person is not None \
                    and not self._open_review(key, res.person):
                kind = "review" if res.kind is Decision.REVIEW else "conflict"
                out += ledger.open_review(kind, key, res.person, res.against or "",
                                          res.match.score if res.match else 0.0,
                                          res.match.reasons if res.match else ())
        self.index.add(d, ledger.person_of[key])
        self._follow(out)
        return out

    def _open_review(self, record: str, person: str) -> bool:
        return any(r.record == record and r.candidate_person == person and
                   r.status == "requested" for r in self.ledger.reviews.values())

    def _follow(self, resources: list[dict]) -> None:
        """Keep the candidate index's person ids in step with the ledger."""
        for res in resources:
            if res["resourceType"] == "Person" and res.get("active", True):
                for r in person_records(res):
                    if self.index.person_of(r) is not None:
                        self.index.move(r, res["id"])

    async def _publish(self, resources: list[dict]) -> None:
        if not resources:
            return
        envs = [self.signer.sign(Envelope(
            id=f"mpi-{r['meta']['versionId']}-{r['resourceType']}-{r['id']}",
            source=HUB_SOURCE, type=f"fhir.{r['resourceType']}.upsert.v1",
            subject=f"{r['resourceType']}/{r['id']}", time=now_rfc3339(), key=MPI_KEY,
            data=orjson.dumps(r))) for r in resources]
        await publish_durably(self.publisher, self.settings.topics.events, envs, self.acks,
                              self.settings.ack_timeout_s)
        await self._folded(int(resources[-1]["meta"]["versionId"]))

    async def _folded(self, seq: int, timeout: float = 60.0) -> None:
        """Wait until the projection holds ``seq``: reads after a decision see it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await asyncio.to_thread(self._max_seq) < seq:
            if loop.time() > deadline:
                raise MpiError(f"the mpi projection has not applied decision {seq} in "
                               f"{timeout:.0f} s (is `hub project` running?)")
            await asyncio.sleep(0.05)

    def _max_seq(self) -> int:
        p, r = self.t[PERSONS], self.t[REVIEWS]
        with self.store.connect() as conn:
            a = conn.execute(sa.select(sa.func.max(p.c.seq))).scalar() or 0
            b = conn.execute(sa.select(sa.func.max(r.c.seq))).scalar() or 0
        return max(a, b)

    # --- what people decide --------------------------------------------------------------
    def _must_lead(self) -> None:
        if not self.leader:
            holder = lease.holder_of(self.store, LEASE)
            raise NotLeader("this hub replica does not make the patient index's decisions; "
                            f"{holder or 'no replica yet'} does: send the request there "
                            "(or retry: leadership moves when a replica stops)")

    async def close_review(self, review_id: str, link: bool, by: str) -> dict:
        async with self._lock:
            self._must_lead()
            try:
                out = self.ledger.close_review(review_id, link, by)
            except (KeyError, ValueError) as exc:
                raise MpiError(str(exc).strip("'\"")) from exc
            self._follow(out)
            await self._publish(out)
        return self.describe(self.ledger.reviews[review_id].record)

    async def unlink(self, record: str, by: str) -> dict:
        async with self._lock:
            self._must_lead()
            try:
                out = self.ledger.unlink(record, note=f"unlinked by {by}")
            except KeyError as exc:
                raise MpiError(str(exc).strip("'\"")) from exc
            self._follow(out)
            await self._publish(out)
        return self.describe(record)

    async def merge(self, survivor_record: str, merged_record: str, by: str) -> dict:
        """Merge the person of ``merged_record`` into the person of ``survivor_record``."""
        async with self._lock:
            self._must_lead()
            ps = [self.ledger.person_of.get(r) for r in (survivor_record, merged_record)]
            if None in ps:
                missing = [r for r, p in zip((survivor_record, merged_record), ps, strict=True)
                           if p is None]
                raise MpiError(f"not in the index: {', '.join(missing)}")
            if ps[0] == ps[1]:
                raise MpiError(f"{survivor_record} and {merged_record} are already one person")
            out = self.ledger.merge(ps[0], ps[1], note=f"merged by {by}")  # type: ignore[arg-type]
            self._follow(out)
            await self._publish(out)
        return self.describe(survivor_record)

    def describe(self, record: str) -> dict:
        person = self.ledger.person_of.get(record)
        return {"record": record, "person": person,
                "records": sorted(self.ledger.records_with(record))}


def pending(store: Store, limit: int = 500) -> list[dict]:
    """Records new or changed since their last decision: no decision yet, or one that names
    an older version than the record's current one (both keys in version order)."""
    t = _tables()
    r, d = t[RECORDS], t[DECIDED]
    stmt = (sa.select(r).select_from(r.outerjoin(d, r.c.record_key == d.c.record_key))
            .where(sa.or_(d.c.order_key.is_(None), d.c.order_key < r.c.order_key))
            .order_by(r.c.order_key).limit(limit))
    with store.connect() as conn:
        return [plain(m) for m in conn.execute(stmt).mappings()]


def linked_records(store: Store, record_key: str) -> list[str]:
    """Every record of the same consortium person as ``record_key`` (itself if unlinked),
    read from the projection: what the read API uses to follow merges."""
    links = _tables()[LINKS]
    with store.connect() as conn:
        person = conn.execute(sa.select(links.c.person_id)
                              .where(links.c.record_key == record_key)).scalar()
        if person is None:
            return [record_key]
        keys = conn.execute(sa.select(links.c.record_key)
                            .where(links.c.person_id == person)).scalars().all()
    return sorted(set(keys) | {record_key})


def linked_records_of(store: Store, record_keys: Iterable[str], chunk: int = 500
                      ) -> dict[str, list[str]]:
    """``linked_records`` of many records in a few queries (one pair per ``chunk`` records,
    not one pair per record): what a list filtered by consents follows, per consent."""
    links = _tables()[LINKS]
    wanted = sorted(set(record_keys))
    person_of: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    with store.connect() as conn:
        for i in range(0, len(wanted), chunk):
            part = wanted[i:i + chunk]
            found = {r: p for r, p in conn.execute(
                sa.select(links.c.record_key, links.c.person_id)
                .where(links.c.record_key.in_(part)))}
            person_of.update(found)
            people = sorted(set(found.values()) - set(members))
            for record, person in conn.execute(sa.select(links.c.record_key, links.c.person_id)
                                               .where(links.c.person_id.in_(people))):
                members.setdefault(person, set()).add(record)
    return {k: sorted(members.get(person_of[k], set()) | {k}) if k in person_of else [k]
            for k in wanted}
