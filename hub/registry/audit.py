"""Checking the archive: does every journaled event still verify against the registry?

The registry keeps every key a facility (or the hub) ever had, with the moment it was
retired or revoked, so an event signed before a rotation verifies years later. Each event is
judged as of its own time: a tampered journal row, or an event signed with a key that was
not valid then, shows up here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa

from hub.engine.projection import Event
from hub.errors import AuthError
from hub.facilities import Facility, FacilityDirectory
from hub.registry import read
from hub.registry.model import HUB_TIER
from hub.store.db import Store
from hub.store.schema import journal


def directory_from_log(store: Store) -> FacilityDirectory:
    records = read.current(store)
    hub = next((r for r in records.values() if r.tier == HUB_TIER), None)
    members = [Facility(r, f"(no token: {r.id})") for r in records.values()
               if r.tier != HUB_TIER]
    return FacilityDirectory(members, hub=hub)


def _events(store: Store, batch: int = 5000) -> Iterator[list[Event]]:
    last = 0
    cols = (journal.c.seq, journal.c.event_id, journal.c.source, journal.c.type,
            journal.c.subject, journal.c.time, journal.c.key, journal.c.data,
            journal.c.signature)
    while True:
        with store.connect() as conn:
            rows = conn.execute(sa.select(*cols).where(journal.c.seq > last)
                                .order_by(journal.c.seq).limit(batch)).all()
        if not rows:
            return
        last = rows[-1].seq
        yield [Event(r.event_id, r.source, r.type, r.subject, r.time, r.key, r.data,
                     signature=r.signature) for r in rows]


def verify_journal(store: Store, progress: Callable[[int], None] | None = None
                   ) -> tuple[int, Counter[str], list[str]]:
    """(events checked, failures by reason, first failures described)."""
    directory = directory_from_log(store)
    failures: Counter[str] = Counter()
    examples: list[str] = []
    n = 0
    for events in _events(store):
        for e in events:
            at = datetime.fromisoformat(e.time.replace("Z", "+00:00"))
            try:
                directory.verify(e, at=at, now=at, allow_hub=True)
            except AuthError as exc:
                failures[exc.reason] += 1
                if len(examples) < 10:
                    examples.append(f"{e.id}: {exc}")
        n += len(events)
        if progress is not None:
            progress(len(events))
    return n, failures, examples
