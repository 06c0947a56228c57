"""Counts per facility and resource type. Counters are not idempotent by nature, which is
why this projection is also the crash tests' witness: a doubled event shows as a wrong count."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hub.engine.projection import Change, Event, Increment
from hub.envelope import HUB_SOURCE

TABLE = "activity_counts"


class ActivityProjection:
    name = "activity"
    version = 2  # 2: the hub's own events (registry, patient index) are not counted

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        t = sa.Table(
            TABLE + suffix,
            metadata,
            sa.Column("facility", sa.String(64), primary_key=True),
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("events", sa.BigInteger, nullable=False),
            sa.Column("deletes", sa.BigInteger, nullable=False),
            sa.Column("last_time", sa.String(40), nullable=False),
        )
        return {TABLE: t}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        return [
            Increment(TABLE, {"facility": e.facility_id, "resource_type": e.resource_type},
                      {"events": 1, "deletes": int(e.is_delete)}, {"last_time": e.time})
            for e in events if e.source != HUB_SOURCE  # facilities' activity, not the hub's
        ]
