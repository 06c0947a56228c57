"""The ``eventsourcing`` library's way to the shared record (``hub bench --peers``).

An application (:class:`HubEvents`) stores the hub's events, one aggregate sequence per
resource, in SQLite; a follower (:class:`RecordFollower`, the library's
``eventsourcing.system.Follower``) pulls them from the application's notification log and
folds each into the row ``record_resources`` holds, written by its process recorder
(:class:`RecordView`) in the transaction that records its tracking position: the library's
exactly-once contract, one transaction per event. The 9.x ``ProjectionRunner`` needs a
recorder that can be subscribed to, which the SQLite one cannot; the follower is how the
library catches up on SQLite.

Needs the ``bench`` extra (``pip install -e '.[bench]'``); imported only by bench.peers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import DomainEvent
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.system import Follower

from bench.peer_fold import UPSERT, record_row
from hub.envelope import Envelope

# Reads as the hub's rebuild reads the journal: 1,000 events a query (the library's
# default is 10).
SECTION = 1000


@dataclass(frozen=True)
class ResourceRecorded(DomainEvent):
    """One hub event, as the journal keeps it (the data as text: the library's JSON
    transcoder has no bytes)."""

    event_id: str
    source: str
    type: str
    subject: str
    time: str
    key: str
    data: str


class HubEvents(Application):
    name = "HubEvents"
    log_section_size = SECTION


class RecordView(SQLiteProcessRecorder):
    """The follower's recorder: the record row goes into the transaction that records the
    follower's tracking position (``collect_events(record_row=...)`` hands it here)."""

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[Any], **kwargs: Any
                       ) -> Sequence[int] | None:
        row = kwargs.get("record_row")
        if row is not None:
            c.execute(UPSERT, row)
        return super()._insert_events(c, stored_events, **kwargs)


class RecordFollower(Follower):
    name = "RecordFollower"
    pull_section_size = SECTION

    def policy(self, domain_event: Any, processing_event: ProcessingEvent) -> None:
        if isinstance(domain_event, ResourceRecorded):
            e = domain_event
            row = record_row(e.event_id, e.source, e.type, e.subject, e.time, e.key,
                             e.data.encode())
            if row is not None:
                processing_event.collect_events(record_row=row)


def _env(db: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)}


def store_events(db: Path, envs: Sequence[Envelope], chunk: int = 1000) -> None:
    """The application records the events (not timed: the hub's journal is filled
    beforehand too)."""
    app = HubEvents(env=_env(db))
    versions: dict[str, int] = {}
    now = datetime.now(UTC)
    try:
        for i in range(0, len(envs), chunk):
            batch = []
            for e in envs[i:i + chunk]:
                stream = f"{e.source}/{e.subject}"
                version = versions[stream] = versions.get(stream, 0) + 1
                batch.append(ResourceRecorded(
                    originator_id=uuid5(NAMESPACE_URL, stream), originator_version=version,
                    timestamp=now, event_id=e.id, source=e.source, type=e.type,
                    subject=e.subject, time=e.time, key=e.key, data=e.data.decode()))
            app.save(*batch)
    finally:
        app.close()


def catch_up(leader_db: Path, view_db: Path, synchronous: str = "NORMAL") -> tuple[float, int]:
    """(events/s, events) of the follower catching up from nothing.

    ``synchronous``: the hub runs SQLite with ``synchronous=NORMAL``; the library leaves
    SQLite's default (FULL: an fsync at every commit, so at every event here). The row is
    the same either way; the bench sets the hub's, so the figure is not one of fsyncs.
    ``view_db`` holds ``record_resources`` already (bench.peers.create_record_table)."""
    leader = HubEvents(env=_env(leader_db))
    follower = RecordFollower(env={**_env(view_db),
                                   "PROCESS_RECORDER_TOPIC": f"{__name__}:RecordView"})
    try:
        pool = follower.recorder.datastore.pool
        # Every connection the pool will hand out, set like the hub's store.
        conns = [pool.get_connection(is_writer=False) for _ in range(pool.pool_size)]
        for conn in conns:
            conn._sqlite_conn.execute(f"PRAGMA synchronous={synchronous}")
        for conn in conns:
            pool.put_connection(conn)
        follower.follow(leader.name, leader.notification_log)
        events = leader.recorder.max_notification_id() or 0
        started = time.perf_counter()
        follower.pull_and_process(leader.name)
        elapsed = time.perf_counter() - started
        assert follower.recorder.max_tracking_id(leader.name) == events
    finally:
        follower.close()
        leader.close()
    return events / elapsed, events
