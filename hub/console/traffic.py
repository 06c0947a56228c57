"""Events accepted and refused: per minute over the last hour, and by facility and type.

Accepted events are counted from the journal by their event time (a facility's clock;
the journal keeps no arrival time), refused inputs from the dead letters by the time the
hub refused them. ``facilities`` narrows both to those senders (None: everyone's).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa

from hub import clock
from hub.envelope import HUB_ID, HUB_SOURCE, SOURCE_PREFIX
from hub.store.db import Store
from hub.store.schema import dead_letters, journal

RECENT_EVENTS = 50_000  # the newest journal rows looked at: an hour of a busy consortium


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _instant(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=clock.CONSORTIUM_TZ)


def resource_type(event_type: str) -> str:
    """``fhir.Observation.upsert.v1`` -> ``Observation``."""
    parts = event_type.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "fhir" else event_type


def recent(store: Store, facilities: frozenset[str] | None, minutes: int = 60,
           now: datetime | None = None) -> dict:
    """Per-minute series (``labels``, ``accepted``, ``refused``) for the last ``minutes``
    in consortium time, and the window's counts by facility and resource type."""
    now = now or clock.now()
    start = _minute(now) - timedelta(minutes=minutes - 1)
    j, d = journal, dead_letters
    # Grouped in SQL by minute and zone (RFC 3339 times: ``...T10:22:49.297Z`` or
    # ``...+08:00``), over the newest journal rows only: a primary-key range, however long
    # the journal.
    minute = sa.func.substr(j.c.time, 1, 16)
    zone = sa.case((j.c.time.like("%Z"), "Z"), else_=sa.func.substr(j.c.time, -6))
    newest = sa.select(sa.func.max(j.c.seq)).scalar_subquery()
    accepted_q = (sa.select(j.c.source, j.c.type, minute, zone, sa.func.count())
                  .where(j.c.seq > sa.func.coalesce(newest, 0) - RECENT_EVENTS)
                  .group_by(j.c.source, j.c.type, minute, zone))
    refused_q = (sa.select(d.c.facility, d.c.resource_type, d.c.refused_at)
                 .where(d.c.refused_at >= clock.rfc3339(start)))
    if facilities is not None:
        accepted_q = accepted_q.where(j.c.source.in_([SOURCE_PREFIX + f for f in facilities]))
        refused_q = refused_q.where(d.c.facility.in_(sorted(facilities)))
    per_minute = {start + timedelta(minutes=i): [0, 0] for i in range(minutes)}
    by_facility: Counter[tuple[str, str]] = Counter()
    by_type: Counter[tuple[str, str]] = Counter()
    with store.connect() as conn:
        accepted = conn.execute(accepted_q).all()
        refused = conn.execute(refused_q).all()
    for source, etype, at_minute, at_zone, n in accepted:
        at = _instant(f"{at_minute}:00{at_zone}")
        if at is None or not start <= at < start + timedelta(minutes=minutes):
            continue
        per_minute[_minute(at.astimezone(start.tzinfo))][0] += n
        by_facility[(HUB_ID if source == HUB_SOURCE else source.removeprefix(SOURCE_PREFIX),
                     "accepted")] += n
        by_type[(resource_type(etype), "accepted")] += n
    for facility, rtype, refused_at in refused:
        at = _instant(refused_at)
        if at is None or at >= start + timedelta(minutes=minutes):
            continue
        per_minute[_minute(at.astimezone(start.tzinfo))][1] += 1
        by_facility[(facility or "(unknown sender)", "refused")] += 1
        by_type[(rtype or "(unreadable)", "refused")] += 1
    local = clock.CONSORTIUM_TZ
    return {
        "labels": [m.astimezone(local).strftime("%H:%M") for m in per_minute],
        "accepted": [v[0] for v in per_minute.values()],
        "refused": [v[1] for v in per_minute.values()],
        "by_facility": _table(by_facility),
        "by_type": _table(by_type),
    }


def _table(counts: Counter[tuple[str, str]]) -> list[dict]:
    names = sorted({name for name, _ in counts})
    return [{"name": n, "accepted": counts[(n, "accepted")], "refused": counts[(n, "refused")]}
            for n in names]
