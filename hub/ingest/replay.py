"""Replay detection at the inbound edge: an event id enters the log once.

Kafka re-delivers after a crash (same record, same offset): that is not a replay, and the
stage must append it again, since the first append may not have happened. A replay is the
same event id arriving as a *different* inbound record: a captured event sent again, or a
facility re-sending with a reused id. The first record to claim an id owns it; the claim is
an insert-if-absent, so two ingest replicas racing on one id still agree on the owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import inbound_seen

Claim = tuple[str, str, int, int]  # event id, topic id, partition, offset


def replays(store: Store, claims: Sequence[Claim]) -> set[int]:
    """Indexes in ``claims`` whose event id belongs to another inbound record."""
    if not claims:
        return set()
    rows = [{"event_id": c[0], "topic_id": c[1], "partition": c[2], "offset": c[3]}
            for c in claims]
    owners: dict[str, tuple[str, int, int]] = {}
    with store.begin() as conn:
        conn.execute(dialect_insert(conn, inbound_seen).on_conflict_do_nothing(
            index_elements=["event_id"]), rows)
        ids = list({c[0] for c in claims})
        for i in range(0, len(ids), 900):  # stay under every driver's bind-parameter limit
            chunk = ids[i:i + 900]
            for eid, tid, part, off in conn.execute(
                    sa.select(inbound_seen.c.event_id, inbound_seen.c.topic_id,
                              inbound_seen.c.partition, inbound_seen.c.offset)
                    .where(inbound_seen.c.event_id.in_(chunk))):
                owners[eid] = (tid, part, off)
    return {i for i, c in enumerate(claims) if owners.get(c[0]) != (c[1], c[2], c[3])}
