"""Consortium file -> Organization events: every registry change becomes an event in the log.

The hub compares each entry of the consortium file (and its own entry, which carries the
keys the gateway signs with) with what it last published, and publishes an Organization
event for each difference. A facility dropped from the file is published as inactive, never
deleted: its old events must stay verifiable. Publishing twice (a crash before the
bookkeeping commit, two replicas at once) gives the same registry: the entries are equal.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

import orjson
import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.envelope import HUB_ID, HUB_SOURCE, Envelope, new_event_id, now_rfc3339
from hub.registry import read
from hub.registry.model import HUB_TIER, FacilityRecord, SigningKey, to_organization
from hub.signing import Signer
from hub.store.db import Store
from hub.store.schema import registry_sync

log = logging.getLogger(__name__)


def digest(rec: FacilityRecord) -> str:
    return hashlib.sha256(orjson.dumps(to_organization(rec), option=orjson.OPT_SORT_KEYS)
                          ).hexdigest()


def organization_event(rec: FacilityRecord, signer: Signer, time: str | None = None
                       ) -> Envelope:
    env = Envelope(id=new_event_id(), source=HUB_SOURCE, type="fhir.Organization.upsert.v1",
                   subject=f"Organization/{rec.id}", time=time or now_rfc3339(),
                   key=f"registry.{rec.id}", data=orjson.dumps(to_organization(rec)))
    return signer.sign(env)


def hub_record(store: Store, signer: Signer, consortium: str) -> FacilityRecord:
    """The hub's own entry: every key it has signed with (old ones verify old events)."""
    known = read.current(store).get(HUB_ID)
    keys = known.keys if known else ()
    if all(k.kid != signer.kid for k in keys):
        keys = (*keys, SigningKey(signer.kid, signer.public_key, signer.created))
    return FacilityRecord(HUB_ID, consortium, HUB_TIER, keys=keys)


def pending(store: Store, records: list[FacilityRecord]) -> list[FacilityRecord]:
    """Entries that differ from what was last published, plus departures as inactive."""
    with store.connect() as conn:
        published = dict(conn.execute(sa.select(registry_sync.c.facility_id,
                                                registry_sync.c.digest)).all())
    out = [r for r in records if published.get(r.id) != digest(r)]
    gone = set(published) - {r.id for r in records}
    if gone:
        logged = read.current(store)
        out += [replace(logged[g], active=False) for g in sorted(gone)
                if g in logged and logged[g].active]
    return out


def mark_published(store: Store, records: list[FacilityRecord]) -> None:
    if not records:
        return
    now = now_rfc3339()
    with store.begin() as conn:
        ins = dialect_insert(conn, registry_sync)
        conn.execute(ins.on_conflict_do_update(
            index_elements=["facility_id"],
            set_={"digest": ins.excluded.digest, "published": ins.excluded.published}),
            [{"facility_id": r.id, "digest": digest(r), "published": now} for r in records])
