"""The workload every measurement shares: a simulated consortium's events, signed as each
facility's system signs them, and a journal filled with them."""

from __future__ import annotations

import sqlalchemy as sa

from hub.demo.population import PopulationSimulator, SimFacility
from hub.envelope import Envelope
from hub.identity import use_identity_secret
from hub.ingest.prepare import prepare_upsert
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer, use_hub_signer
from hub.store.db import Store
from hub.store.schema import journal


def population(n: int) -> list[tuple[str, dict]]:
    directory = load_directory(None)
    sim = PopulationSimulator([SimFacility(f.id, f.tier) for f in directory], seed=3)
    return [sim.next_event() for _ in range(n)]


def envelopes(items: list[tuple[str, dict]], batch: int = 100) -> list[Envelope]:
    """Envelopes as each facility's own system signs them for ``hie.inbound.v1``: the SDK's
    ``publish_many``, one manifest signature per ``batch`` events of a facility (1: each
    event signed on its own, as ``publish`` and older SDKs do)."""
    directory = load_directory(None)
    use_hub_signer(demo_signer("hub"))
    use_identity_secret(b"bench-identity-secret-0123456789")
    signers = {f.id: demo_signer(f.id) for f in directory}
    out: list[Envelope] = []
    for fid, res in items:
        p = prepare_upsert(directory.get(fid), res, sign=False)
        assert p.envelope is not None, p.issues
        out.append(p.envelope)
    pending: dict[str, list[int]] = {}
    for i, (fid, _) in enumerate(items):
        pending.setdefault(fid, []).append(i)
    for fid, at in pending.items():
        for start in range(0, len(at), batch):
            chunk = at[start:start + batch]
            for i, env in zip(chunk, signers[fid].sign_batch([out[i] for i in chunk]),
                              strict=True):
                out[i] = env
    return out


def fill_journal(store: Store, envs: list[Envelope]) -> None:
    rows = [{"event_id": e.id, "source": e.source, "type": e.type, "subject": e.subject,
             "time": e.time, "key": e.key, "signature": e.signature, "data": e.data,
             "topic": "hie.events.v1", "topic_id": "bench", "partition": i % 6, "offset": i}
            for i, e in enumerate(envs)]
    with store.begin() as conn:
        conn.execute(sa.insert(journal), rows)
