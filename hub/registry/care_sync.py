"""Teams, residents and devices of the consortium file -> CareTeam, EpisodeOfCare and Device
events, the way ``hub.registry.sync`` publishes Organizations.

Each entry is compared with what this hub last published (``hub_care_sync``); a change is
published, signed with the hub's key; an entry gone from the file is published once as
inactive (a finished episode, an inactive device), never deleted: the readings it bound
stay explained. Publishing twice (a crash before the bookkeeping commit) changes nothing:
the resources are equal.
"""

from __future__ import annotations

import hashlib

import orjson
import sqlalchemy as sa

from hub.engine.projection import Upsert
from hub.engine.writer import write
from hub.envelope import HUB_SOURCE, Envelope, new_event_id, now_rfc3339
from hub.registry import care
from hub.signing import Signer
from hub.store.db import Store
from hub.store.schema import care_sync

Pending = tuple[str, str, dict, bool]  # sync id, Kafka key, resource, active


def _digest(resource: dict) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def pending(store: Store, registry: care.CareRegistry) -> list[Pending]:
    """What differs from what was last published, and what left the file."""
    with store.connect() as conn:
        published = {r.sync_id: (r.digest, r.active) for r in conn.execute(
            sa.select(care_sync.c.sync_id, care_sync.c.digest, care_sync.c.active))}
    wanted = care.resources(registry)
    out: list[Pending] = [(sid, key, res, True) for sid, (key, res) in wanted.items()
                          if published.get(sid, ("", False))[0] != _digest(res)]
    for sid in sorted(set(published) - set(wanted)):
        if published[sid][1] and (gone := care.retired(sid)) is not None:
            out.append((sid, gone[0], gone[1], False))
    return out


def event(sync_id: str, key: str, resource: dict, signer: Signer) -> Envelope:
    return signer.sign(Envelope(
        id=new_event_id(), source=HUB_SOURCE,
        type=f"fhir.{resource['resourceType']}.upsert.v1", subject=sync_id,
        time=now_rfc3339(), key=key, data=orjson.dumps(resource)))


def mark_published(store: Store, done: list[Pending]) -> None:
    now = now_rfc3339()
    with store.begin() as conn:
        write(conn, {care_sync.name: care_sync}, [Upsert(care_sync.name, {
            "sync_id": sid, "digest": _digest(res), "active": active, "published": now},
            ("sync_id",)) for sid, _, res, active in done])
