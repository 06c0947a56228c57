"""Events accepted and refused: per minute over the last hour, and by facility and type.

Accepted events come from the activity projection's per-minute counts (facilities' events
by their event time; the hub's own registry and patient-index events are not traffic),
refused inputs from the dead letters by the time the hub refused them. Both reads are
bounded by the window, however long the journal. ``facilities`` narrows both to those
senders (None: everyone's).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from hub import clock
from hub.activity.projection import MINUTES, ActivityProjection
from hub.store.db import Store
from hub.store.schema import dead_letters

_MINUTES = ActivityProjection().tables(sa.MetaData())[MINUTES]
_MINUTE = "%Y-%m-%dT%H:%M"


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def recent(store: Store, facilities: frozenset[str] | None, minutes: int = 60,
           now: datetime | None = None) -> dict:
    """Per-minute series (``labels`` in consortium time, ``accepted``, ``refused``) for the
    last ``minutes``, and the window's counts by facility and resource type."""
    start = _minute((now or clock.now()).astimezone(UTC)) - timedelta(minutes=minutes - 1)
    end = start + timedelta(minutes=minutes)
    m, d = _MINUTES, dead_letters
    accepted_q = (sa.select(m.c.minute, m.c.facility, m.c.resource_type, m.c.events)
                  .where(m.c.minute >= start.strftime(_MINUTE),
                         m.c.minute < end.strftime(_MINUTE)))
    refused_q = (sa.select(d.c.facility, d.c.resource_type, d.c.refused_at)
                 .where(d.c.refused_at >= clock.rfc3339(start),
                        d.c.refused_at < clock.rfc3339(end)))
    if facilities is not None:
        accepted_q = accepted_q.where(m.c.facility.in_(sorted(facilities)))
        refused_q = refused_q.where(d.c.facility.in_(sorted(facilities)))
    with store.connect() as conn:
        accepted = conn.execute(accepted_q).all()
        refused = conn.execute(refused_q).all()
    labels = [start + timedelta(minutes=i) for i in range(minutes)]
    per_minute = {at.strftime(_MINUTE): [0, 0] for at in labels}
    by_facility: Counter[tuple[str, str]] = Counter()
    by_type: Counter[tuple[str, str]] = Counter()
    for minute, facility, rtype, n in accepted:
        per_minute[minute][0] += n
        by_facility[(facility, "accepted")] += n
        by_type[(rtype, "accepted")] += n
    for facility, rtype, refused_at in refused:
        per_minute[refused_at[:16]][1] += 1
        by_facility[(facility or "(unknown sender)", "refused")] += 1
        by_type[(rtype or "(unreadable)", "refused")] += 1
    return {
        "labels": [at.astimezone(clock.CONSORTIUM_TZ).strftime("%H:%M") for at in labels],
        "accepted": [v[0] for v in per_minute.values()],
        "refused": [v[1] for v in per_minute.values()],
        "by_facility": _table(by_facility),
        "by_type": _table(by_type),
    }


def _table(counts: Counter[tuple[str, str]]) -> list[dict]:
    names = sorted({name for name, _ in counts})
    return [{"name": n, "accepted": counts[(n, "accepted")], "refused": counts[(n, "refused")]}
            for n in names]
