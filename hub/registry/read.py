"""Questions to the registry projection: who was who, now or as of a moment."""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from hub.registry.model import FacilityRecord, from_organization
from hub.registry.projection import CURRENT, HISTORY, RegistryProjection
from hub.store.db import Store

_TABLES = RegistryProjection().tables(sa.MetaData())


def current(store: Store) -> dict[str, FacilityRecord]:
    t = _TABLES[CURRENT]
    with store.connect() as conn:
        rows = conn.execute(sa.select(t.c.body)).all()
    return {r.id: r for r in (from_organization(orjson.loads(b)) for (b,) in rows)}


def as_of(store: Store, when: str) -> dict[str, FacilityRecord]:
    """Each facility's entry as it stood at ``when`` (RFC 3339), from the history."""
    h = _TABLES[HISTORY]
    latest = (sa.select(h.c.facility_id, sa.func.max(h.c.valid_from).label("vf"))
              .where(h.c.valid_from <= when).group_by(h.c.facility_id).subquery())
    stmt = (sa.select(h.c.body, h.c.event_id)
            .join(latest, sa.and_(h.c.facility_id == latest.c.facility_id,
                                  h.c.valid_from == latest.c.vf))
            .order_by(h.c.facility_id, h.c.event_id))
    with store.connect() as conn:
        rows = conn.execute(stmt).all()
    out: dict[str, FacilityRecord] = {}
    for body, _ in rows:  # two events at one instant: the later event id wins, as it sorts
        rec = from_organization(orjson.loads(body))
        out[rec.id] = rec
    return out


def history(store: Store, facility_id: str) -> list[tuple[str, str, FacilityRecord]]:
    """(valid from, event id, entry) for every registry change of one facility, oldest first."""
    h = _TABLES[HISTORY]
    with store.connect() as conn:
        rows = conn.execute(sa.select(h.c.valid_from, h.c.event_id, h.c.body)
                            .where(h.c.facility_id == facility_id)
                            .order_by(h.c.valid_from, h.c.event_id)).all()
    return [(vf, eid, from_organization(orjson.loads(b))) for vf, eid, b in rows]
