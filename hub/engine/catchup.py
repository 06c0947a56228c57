"""Events of earlier logs that the journal kept and a projection never applied.

With the bundled broker the log lives in memory. If the hub is killed (SIGKILL, power) the
journal may have committed events that some projection had not applied yet; the restarted
broker's log no longer holds them, so reading the new log cannot bring them. Each projection
therefore asks the journal, when it starts and every time it checks the log, for the events
of *other* logs (topic ids) beyond the positions it stored for them, and applies them with
the same exactly-once commit as live events (positions and applied ids in the same
transaction). A log it holds no positions for at all is read from the journal in full (the
applied-id ledger skips what a rebuild or another path already applied).

The journal's index on (topic id, partition, offset) keeps each look to a few index seeks.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.engine.projection import Event
from hub.store.schema import journal, positions

_COLS = (journal.c.event_id, journal.c.source, journal.c.type, journal.c.subject,
         journal.c.time, journal.c.key, journal.c.data, journal.c.signature,
         journal.c.partition, journal.c.offset)


def earlier_logs(conn: Connection, consumer: str, topic: str, current: str,
                 all_logs: bool) -> dict[tuple[str, int], int]:
    """(topic id, partition) -> last applied offset (-1: none) for the logs other than
    ``current`` to look at. ``all_logs``: also those the journal has and the consumer never
    stored a position for (costs a scan of the journal's index: do it at start only)."""
    found = {(tid, part): off for tid, part, off in conn.execute(
        sa.select(positions.c.topic_id, positions.c.partition, positions.c.offset).where(
            positions.c.consumer == consumer, positions.c.topic == topic,
            positions.c.topic_id != current))}
    if all_logs:
        known = {tid for tid, _ in found}
        for tid, part in conn.execute(
                sa.select(journal.c.topic_id, journal.c.partition).distinct()
                .where(journal.c.topic == topic, journal.c.topic_id != current)):
            if tid not in known:
                found.setdefault((tid, part), -1)
    return found


def missed(conn: Connection, topic: str, topic_id: str, partition: int, after: int,
           limit: int) -> list[Event]:
    """Up to ``limit`` journaled events of that log partition after offset ``after``."""
    rows = conn.execute(
        sa.select(*_COLS).where(journal.c.topic == topic, journal.c.topic_id == topic_id,
                                journal.c.partition == partition, journal.c.offset > after)
        .order_by(journal.c.offset).limit(limit))
    return list(_events(rows, topic, topic_id))


def _events(rows, topic: str, topic_id: str) -> Iterator[Event]:
    for eid, src, typ, subj, tm, key, data, sig, part, off in rows:
        yield Event(eid, src, typ, subj, tm, key, data, topic, part, off, sig, topic_id)
