"""Recognition statistics: items recognised, re-tested (by reason) and yuan saved, per
ordering facility, consortium month and item, folded from the decision Tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Increment
from hub.envelope import HUB_SOURCE
from hub.recognition.decisions import COUNTS, read_decision
from hub.recognition.rules import CONSORTIUM_TZ

STATS, REASONS = "recognition_stats", "recognition_reasons"


class RecognitionProjection:
    name = "recognition"
    version = 1

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        stats = sa.Table(
            STATS + suffix, metadata,
            sa.Column("facility", sa.String(64), primary_key=True),
            sa.Column("month", sa.String(7), primary_key=True),
            sa.Column("item", sa.String(40), primary_key=True),
            sa.Column("recognised", sa.BigInteger, nullable=False),
            sa.Column("retested", sa.BigInteger, nullable=False),
            sa.Column("not_counted", sa.BigInteger, nullable=False),
            sa.Column("saved_fen", sa.BigInteger, nullable=False),  # yuan x 100, exact sums
            sa.Column("last_time", sa.String(40), nullable=False),
        )
        reasons = sa.Table(
            REASONS + suffix, metadata,
            sa.Column("facility", sa.String(64), primary_key=True),
            sa.Column("month", sa.String(7), primary_key=True),
            sa.Column("item", sa.String(40), primary_key=True),
            sa.Column("reason", sa.String(40), primary_key=True),
            sa.Column("decisions", sa.BigInteger, nullable=False),
            sa.Column("last_time", sa.String(40), nullable=False),
        )
        return {STATS: stats, REASONS: reasons}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            if e.source == HUB_SOURCE or e.resource_type != "Task" or e.is_delete:
                continue
            task = orjson.loads(e.data)
            found = read_decision(task)
            if found is None:
                continue
            outcome, item, price, reason = found
            when = task.get("authoredOn") or e.time
            month = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(
                CONSORTIUM_TZ).strftime("%Y-%m")
            keys = {"facility": e.facility_id, "month": month, "item": item}
            counted = outcome == "retested" and COUNTS.get(reason or "", True)
            out.append(Increment(STATS, keys, {
                "recognised": int(outcome == "recognised"), "retested": int(counted),
                "not_counted": int(outcome == "retested" and not counted),
                "saved_fen": round(price * 100) if outcome == "recognised" else 0},
                {"last_time": e.time}))
            if reason:
                out.append(Increment(REASONS, {**keys, "reason": reason}, {"decisions": 1},
                                     {"last_time": e.time}))
        return out
