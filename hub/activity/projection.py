"""Counts per facility and resource type, in all and per minute of event time. Counters are
not idempotent by nature, which is why this projection is also the crash tests' witness: a
doubled event shows as a wrong count."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from hub.clock import CONSORTIUM_TZ
from hub.engine.projection import Change, Event, Increment
from hub.envelope import HUB_SOURCE

TABLE = "activity_counts"
MINUTES = "activity_minutes"  # what the web console's traffic chart reads


def utc_minute(time: str) -> str | None:
    """An event time's minute in UTC, ``2026-12-01T10:22`` (text order is time order);
    None for a time that does not parse (the envelope's time is checked at the edge)."""
    try:
        at = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=CONSORTIUM_TZ)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


class ActivityProjection:
    name = "activity"
    # 2: the hub's own events (registry, patient index) are not counted; 3: per minute too
    version = 3

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
        m = sa.Table(
            MINUTES + suffix,
            metadata,
            sa.Column("minute", sa.String(16), primary_key=True),
            sa.Column("facility", sa.String(64), primary_key=True),
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("events", sa.BigInteger, nullable=False),
        )
        return {TABLE: t, MINUTES: m}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            if e.source == HUB_SOURCE:  # facilities' activity, not the hub's
                continue
            keys = {"facility": e.facility_id, "resource_type": e.resource_type}
            out.append(Increment(TABLE, keys, {"events": 1, "deletes": int(e.is_delete)},
                                 {"last_time": e.time}))
            if (minute := utc_minute(e.time)) is not None:
                out.append(Increment(MINUTES, {"minute": minute, **keys}, {"events": 1}))
        return out
