"""The order-time prompt: when a facility orders a catalogue item and a recognisable prior
result exists, tell the ordering facility on ``hie.recognition.v1``; when the results a
prompt relied on stop qualifying (the laboratory lost its EQA pass from a date, a result was
retracted), withdraw it.

One prompter among the replicas (a lease). Its own state (which orders it has looked at,
which prompts are open) is in ``hub_recognition_prompts``; messages go through an outbox
(``hub_recognition_outbox``) relayed like the change feeds, at least once with stable ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
import sqlalchemy as sa

from adapters.apps.feeds import (
    PriorResult,
    PromptItem,
    RecognitionPrompt,
    RecognitionWithdrawal,
)
from hub import clock
from hub.consent.read import refused_links
from hub.consent.rules import TREATMENT, Reader
from hub.engine.writer import dialect_insert
from hub.envelope import now_rfc3339
from hub.errors import HubError
from hub.recognition.projection import ORDERS, RecognitionProjection
from hub.recognition.rules import CONSORTIUM_TZ, Catalogue
from hub.recognition.service import run_check
from hub.registry.model import FacilityRecord
from hub.store import lease
from hub.store.db import Store
from hub.store.schema import recognition_outbox, recognition_prompts

log = logging.getLogger(__name__)
PROMPT_TYPE = "hie.recognition.prompt.v1"
WITHDRAWN_TYPE = "hie.recognition.withdrawn.v1"
ITEM_SYSTEM = "urn:hie:recognition:item"
OPEN_FOR = timedelta(days=7)  # how long an open prompt is kept under review
_ORDERS = RecognitionProjection().tables(sa.MetaData())[ORDERS]


def ordered_items(catalogue: Catalogue, codes: list[list[str]]) -> list[str]:
    """Catalogue items a ServiceRequest's codes name (item code, or one of its LOINC codes)."""
    found = []
    for system, code in codes:
        for item in catalogue.items.values():
            if (system in (ITEM_SYSTEM, "") and code == item.code) or (
                    system in ("http://loinc.org", "") and code in item.loinc):
                found.append(item.code)
    return list(dict.fromkeys(found))


class Prompter:
    def __init__(self, store: Store, catalogue: Catalogue,
                 registry: Callable[[], dict[str, FacilityRecord]],
                 poll_seconds: float = 0.5) -> None:
        self.store = store
        self.catalogue = catalogue
        self.registry = registry
        self.poll = poll_seconds
        self.holder = lease.holder_name("prompter")
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                if await asyncio.to_thread(lease.acquire, self.store, "recognition-prompter",
                                           self.holder, 15.0):
                    await asyncio.to_thread(self.once)
            except HubError as exc:
                log.warning("recognition prompter: %s; retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll)

    def once(self) -> tuple[int, int]:
        """(prompts raised, prompts withdrawn) in one pass."""
        return self._new_orders(), self._recheck_open()

    def _verdicts(self, facility: str, patient_key: str, items: list[str], ordered: str
                  ) -> dict[str, list]:
        registry = self.registry()
        # A prompt tells the ordering facility of results held elsewhere: never of records a
        # consent keeps that facility out of.
        record = registry.get(facility)
        reader = Reader("facility", facility, TREATMENT, record.tier if record else None,
                        record.group if record else None)
        _, verdicts = run_check(self.store, registry, self.catalogue, patient_key, items,
                                datetime.fromisoformat(ordered).date(),
                                excluded=refused_links(self.store, reader, patient_key,
                                                       clock.now()))
        return {v.item: v.recognisable for v in verdicts}

    def _new_orders(self) -> int:
        p = recognition_prompts
        with self.store.connect() as conn:
            rows = conn.execute(
                sa.select(_ORDERS).select_from(_ORDERS.outerjoin(
                    p, p.c.request_id == _ORDERS.c.request_id))
                .where(p.c.request_id.is_(None)).limit(200)).mappings().all()
        raised = 0
        for o in rows:
            items = ordered_items(self.catalogue, orjson.loads(o["codes"]))
            ordered = datetime.fromisoformat(o["authored"].replace("Z", "+00:00")).astimezone(
                CONSORTIUM_TZ).date().isoformat()
            found = self._verdicts(o["facility"], o["patient_key"], items, ordered) if items else {}
            hits = {i: r for i, r in found.items() if r}
            state = {"request_id": o["request_id"], "status": "open" if hits else "none",
                     "facility": o["facility"], "patient_key": o["patient_key"],
                     "ordered": ordered, "checked_at": now_rfc3339(),
                     "items": orjson.dumps({i: [x["result"] for x in r]
                                            for i, r in hits.items()}).decode()}
            with self.store.begin() as conn:
                conn.execute(dialect_insert(conn, p).on_conflict_do_nothing(
                    index_elements=["request_id"]), [state])
                if hits:
                    self._emit(conn, o["facility"], RecognitionPrompt(
                        type=PROMPT_TYPE, id=f"rec-prompt-{o['request_id']}",
                        request=f"ServiceRequest/{o['request_id']}",
                        patient=o["patient_key"], ordered=ordered, mark=self.catalogue.mark,
                        items=[PromptItem(item=i, name=self.catalogue.items[i].name,
                                          results=[PriorResult(**x) for x in r])
                               for i, r in hits.items()]))
                    raised += 1
        return raised

    def _recheck_open(self) -> int:
        p = recognition_prompts
        since = (clock.now() - OPEN_FOR).astimezone(CONSORTIUM_TZ).date().isoformat()
        with self.store.connect() as conn:
            rows = conn.execute(sa.select(p).where(p.c.status == "open",
                                                   p.c.ordered >= since)).mappings().all()
        withdrawn = 0
        for o in rows:
            relied: dict[str, list[str]] = orjson.loads(o["items"])
            now = self._verdicts(o["facility"], o["patient_key"], list(relied),
                                o["ordered"])
            lost = {i: ids for i, ids in relied.items()
                    if not {x["result"] for x in now.get(i, [])} & set(ids)}
            if not lost:
                continue
            with self.store.begin() as conn:
                conn.execute(sa.update(p).where(p.c.request_id == o["request_id"])
                             .values(status="withdrawn", checked_at=now_rfc3339()))
                self._emit(conn, o["facility"], RecognitionWithdrawal(
                    type=WITHDRAWN_TYPE, id=f"rec-withdrawn-{o['request_id']}",
                    request=f"ServiceRequest/{o['request_id']}", patient=o["patient_key"],
                    items=sorted(lost),
                    why="the prior results this prompt relied on no longer qualify "
                        "(EQA pass lapsed on their date, or the result changed)"))
            withdrawn += 1
        return withdrawn

    @staticmethod
    def _emit(conn, facility: str, message: RecognitionPrompt | RecognitionWithdrawal) -> None:
        # Fields the check did not give stay out of the message rather than arrive as null.
        payload = message.model_dump_json(exclude_unset=True).encode()
        conn.execute(dialect_insert(conn, recognition_outbox).on_conflict_do_nothing(
            index_elements=["feed_id"]), [{"feed_id": message.id, "patient_key": facility,
                                           "payload": payload, "sent": False}])
