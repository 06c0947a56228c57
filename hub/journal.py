"""The journal: the hub's durable archive of every accepted event, idempotent on event id.

It is a projection like the others (same runner, same exactly-once contract) whose one table
is ``hub_journal``; it cannot be rebuilt because it is what rebuilds read.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.store.schema import journal


class JournalProjection:
    name = "journal"
    version = 1
    rebuildable = False
    dedupe_by_event_id = False  # the journal's unique event_id already does it

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        return {"journal": journal}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        return [
            Upsert("journal", {
                "event_id": e.id, "source": e.source, "type": e.type, "subject": e.subject,
                "time": e.time, "key": e.key, "signature": e.signature, "data": e.data,
                "topic": e.topic, "topic_id": e.topic_id, "partition": e.partition,
                "offset": e.offset,
            }, keys=("event_id",), replace=False)  # the first archived copy stays
            for e in events
        ]
