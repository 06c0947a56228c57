"""Recognition statistics: items recognised, re-tested (by reason) and yuan saved, per
ordering facility, consortium month and item, folded from the decision Tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Increment, Upsert
from hub.envelope import HUB_SOURCE
from hub.recognition.decisions import COUNTS, read_decision
from hub.recognition.rules import CONSORTIUM_TZ
from hub.record.rules import version_order

STATS, REASONS, ORDERS = "recognition_stats", "recognition_reasons", "recognition_orders"


class RecognitionProjection:
    name = "recognition"
    # 2: orders for the order-time prompt; 3: orders' versions ordered by the sender's
    # versionId first (record.rules.version_order)
    version = 3

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
        orders = sa.Table(
            ORDERS + suffix, metadata,
            sa.Column("request_id", sa.String(200), primary_key=True),
            sa.Column("patient_key", sa.String(200), nullable=False),
            sa.Column("facility", sa.String(64), nullable=False),
            sa.Column("codes", sa.Text, nullable=False),  # JSON [[system, code], ...]
            sa.Column("authored", sa.String(40), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("order_key", sa.String(320), nullable=False),
        )
        return {STATS: stats, REASONS: reasons, ORDERS: orders}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            if e.source == HUB_SOURCE or e.is_delete:
                continue
            if e.resource_type == "ServiceRequest":
                out += _order(e)
                continue
            if e.resource_type != "Task":
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


def _order(e: Event) -> list[Change]:
    """An order for tests: the prompter checks it against the catalogue and prior results."""
    req = orjson.loads(e.data)
    codes = [[c.get("system") or "", c.get("code")]
             for c in (req.get("code") or {}).get("coding") or () if c.get("code")]
    if not codes or req.get("status") not in (None, "active", "draft"):
        return []
    meta = req.get("meta") or {}
    okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time) + f"|{e.id}"
    return [Upsert(ORDERS, {
        "request_id": f"{e.facility_id}.{req['id']}", "patient_key": e.key,
        "facility": e.facility_id, "codes": orjson.dumps(codes).decode(),
        "authored": req.get("authoredOn") or e.time, "status": req.get("status") or "active",
        "order_key": okey}, ("request_id",), guard="order_key")]
