"""Is event X in, and which projections applied it: by event id or by resource.

A projection applied an event when its stored position on the event's log partition has
reached the event's offset (positions and rows commit together, hub.engine.tracking).
The journal keeps no time of application, so "when" is the event's time and whether each
projection is past it now.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from hub.envelope import SOURCE_PREFIX
from hub.record.read import current_patient_key
from hub.record.rules import hub_id
from hub.store.db import Store
from hub.store.schema import journal, positions

MAX_EVENTS = 50


def _targets(query: str, facilities: Iterable[str]) -> list:
    """Journal conditions for what an operator typed: an event id, ``Type/<facility>.<id>``
    (the hub-wide id the read API uses), or ``Type/<id>`` as the facility sent it."""
    j = journal
    out = [j.c.event_id == query]
    if "/" in query:
        rtype, _, rid = query.partition("/")
        out.append(j.c.subject == query)
        facility, dot, local = rid.partition(".")
        if dot and facility in facilities:
            out.append(sa.and_(j.c.subject == f"{rtype}/{local}",
                               j.c.source == SOURCE_PREFIX + facility))
    return out


def find(store: Store, query: str, known_facilities: Iterable[str],
         visible: frozenset[str] | None) -> list[dict]:
    """Journaled events matching ``query`` (newest first), each with the projections that
    applied it and the patient it is about (when the shared record knows)."""
    query = query.strip()
    if not query:
        return []
    j, p = journal, positions
    q = (sa.select(j.c.seq, j.c.event_id, j.c.source, j.c.type, j.c.subject, j.c.time,
                   j.c.topic, j.c.topic_id, j.c.partition, j.c.offset)
         .where(sa.or_(*_targets(query, known_facilities)))
         .order_by(j.c.seq.desc()).limit(MAX_EVENTS))
    if visible is not None:
        q = q.where(j.c.source.in_([SOURCE_PREFIX + f for f in visible]))
    out = []
    with store.connect() as conn:
        for e in conn.execute(q).mappings().all():
            facility = e["source"].removeprefix(SOURCE_PREFIX)
            rtype, _, local = e["subject"].partition("/")
            applied = conn.execute(
                sa.select(p.c.consumer, p.c.offset)
                .where(p.c.topic == e["topic"], p.c.topic_id == e["topic_id"],
                       p.c.partition == e["partition"]).order_by(p.c.consumer)).all()
            patient = current_patient_key(store, rtype, hub_id(facility, local))
            if rtype == "Patient" and patient is None:
                patient = f"{facility}.{local}"
            out.append({**dict(e), "facility": facility, "patient_key": patient,
                        "projections": [
                            {"name": c.removeprefix("projection:"), "applied": o >= e["offset"],
                             "position": o}
                            for c, o in applied if c.startswith("projection:")]})
    return out
