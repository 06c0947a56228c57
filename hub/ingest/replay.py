"""Replay detection at the inbound edge: an event id enters the log once.

Kafka re-delivers after a crash (same record, same offset): that is not a replay, and the
stage must append it again, since the first append may not have happened. A replay is the
same event id arriving as a *different* inbound record: a captured event sent again, or a
facility re-sending with a reused id. The first record to claim an id owns it; the claim is
an insert-if-absent, so two ingest replicas racing on one id still agree on the owner.

Two kinds of second record are not refused:

* a **duplicate**: the journal already holds the event with the same signature, so this is
  the very event sent again (a facility that got no receipt resends). It is not appended
  again; the facility is sent a receipt instead.
* a **lost event**: the id's owner was read from a log that no longer exists (a bundled
  broker restarted empty: a new topic id) and the journal never got it. The first copy died
  with that log, so this record takes over the claim and is appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import inbound_seen, journal

Claim = tuple[str, str, int, int]  # event id, topic id, partition, offset

_CHUNK = 900  # stay under every driver's bind-parameter limit


@dataclass(frozen=True)
class ReplayVerdicts:
    replays: set[int]     # indexes in the claims: refused (dead-lettered ``replayed``)
    duplicates: set[int]  # indexes: already journaled as sent; answered with a receipt


def replays(store: Store, claims: Sequence[Claim],
            signatures: Sequence[str | None] | None = None) -> ReplayVerdicts:
    """Sort ``claims`` (with the ``ce_signature`` of each, when known) into first
    arrivals, re-deliveries, duplicates and replays."""
    if not claims:
        return ReplayVerdicts(set(), set())
    rows = [{"event_id": c[0], "topic_id": c[1], "partition": c[2], "offset": c[3]}
            for c in claims]
    with store.begin() as conn:
        # The claims that went in are their ids' first arrivals; when every claim did (the
        # common case), nobody else owns any of them and there is nothing to look up.
        claimed = conn.execute(dialect_insert(conn, inbound_seen).on_conflict_do_nothing(
            index_elements=["event_id"]).returning(inbound_seen.c.event_id), rows).scalars()
        if len(set(claimed)) == len(claims):
            return ReplayVerdicts(set(), set())
        owners = _owners(conn, list({c[0] for c in claims}))
        others = [i for i, c in enumerate(claims) if owners.get(c[0]) != tuple(c[1:])]
        if not others:
            return ReplayVerdicts(set(), set())
        kept = _journaled(conn, list({claims[i][0] for i in others}))
        refused: set[int] = set()
        duplicates: set[int] = set()
        for i in others:
            eid, topic_id, partition, offset = claims[i]
            if eid in kept:
                sig = signatures[i] if signatures is not None else None
                (duplicates if sig is not None and sig == kept[eid] else refused).add(i)
            elif owners[eid][0] != topic_id:
                # The owner's log is gone and it never reached the journal: take over.
                conn.execute(sa.update(inbound_seen)
                             .where(inbound_seen.c.event_id == eid)
                             .values(topic_id=topic_id, partition=partition, offset=offset))
                owners[eid] = (topic_id, partition, offset)
            else:
                refused.add(i)
    return ReplayVerdicts(refused, duplicates)


def _owners(conn: sa.Connection, ids: list[str]) -> dict[str, tuple[str, int, int]]:
    owners: dict[str, tuple[str, int, int]] = {}
    for i in range(0, len(ids), _CHUNK):
        for eid, tid, part, off in conn.execute(
                sa.select(inbound_seen.c.event_id, inbound_seen.c.topic_id,
                          inbound_seen.c.partition, inbound_seen.c.offset)
                .where(inbound_seen.c.event_id.in_(ids[i:i + _CHUNK]))):
            owners[eid] = (tid, part, off)
    return owners


def _journaled(conn: sa.Connection, ids: list[str]) -> dict[str, str | None]:
    """Event id -> signature of those ``ids`` the journal holds."""
    found: dict[str, str | None] = {}
    for i in range(0, len(ids), _CHUNK):
        found.update(conn.execute(sa.select(journal.c.event_id, journal.c.signature)
                                  .where(journal.c.event_id.in_(ids[i:i + _CHUNK]))).all())
    return found
