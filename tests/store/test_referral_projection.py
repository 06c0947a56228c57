"""The referral projection on every store: whatever the batch boundaries and however the
partitions interleave (each patient's events keep their order, as Kafka keeps them), the
referral states are the same; a re-delivered batch changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.engine.projection import Event
from hub.engine.writer import write
from hub.referral import read
from hub.referral.projection import ReferralProjection
from hub.referral.rules import SERVICE_SYSTEM, Policy
from hub.registry.consortium_file import read_consortium
from tests.support.events import envelope

PROJECTION = ReferralProjection()
REGISTRY = {f.id: f.record for f in read_consortium(None).facilities}
POLICY = Policy()
NOW = datetime.now(UTC)


def referral(sender: str, rid: str, pid: str, priority: str) -> dict:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "active", "intent": "order",
            "priority": priority,
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]}],
            "code": {"coding": [{"system": SERVICE_SYSTEM, "code": "cardiology"}]},
            "subject": {"reference": f"Patient/{pid}"}}


def task(tid: str, referral_id: str, patient: str, status: str, who: str,
         reason: str | None = None) -> dict:
    t = {"resourceType": "Task", "id": tid, "status": status, "intent": "order",
         "focus": {"reference": f"ServiceRequest/{referral_id}"},
         "for": {"reference": f"Patient/{patient}"}, "owner": {"display": who}}
    if reason:
        t["statusReason"] = {"text": reason}
    return t


def streams() -> list[list[Event]]:
    """Three patients' event streams (one partition each), with competing steps."""
    out = []
    for n, (sender, receiver) in enumerate((("township-1", "county-1"),
                                           ("township-2", "county-1"),
                                           ("community-1", "city-1"))):
        rid, pid = f"sr{n}", f"p{n}"
        key = f"{sender}.{pid}"
        res = [(sender, referral(sender, rid, pid, "stat")),
               (receiver, task(f"a{n}", f"{sender}.{rid}", key, "accepted", "王医生")),
               (receiver, task(f"b{n}", f"{sender}.{rid}", key, "accepted", "李医生")),
               (sender, task(f"c{n}", rid, pid, "cancelled", "张医生")),
               (receiver, task(f"d{n}", f"{sender}.{rid}", key, "in-progress", "王医生"))]
        if n == 1:  # the other one rejected first, with a reason
            res[1] = (receiver, task("a1", f"{sender}.{rid}", key, "rejected", "王医生",
                                     "no-capacity"))
        out.append([Event.from_envelope(envelope(r, facility, members=REGISTRY), "t", n, i)
                    for i, (facility, r) in enumerate(res)])
    return out


STREAMS = streams()


def states(store) -> dict[str, tuple]:
    return {f.request.id: (f.referral.state, f.referral.holder, f.referral.clinician,
                           tuple(h["applied"] for h in f.referral.history))
            for f in read.load(store, REGISTRY, POLICY, now=NOW)}


def fresh(store) -> dict[str, sa.Table]:
    tables = PROJECTION.tables(sa.MetaData())
    with store.begin() as conn:
        for t in tables.values():
            t.drop(conn, checkfirst=True)
            t.create(conn)
    return tables


def run(store, order: list[int], cuts: set[int], redeliver: bool) -> dict[str, tuple]:
    tables = fresh(store)
    queues = [list(s) for s in STREAMS]
    events = [queues[i].pop(0) for i in order]
    batches, start = [], 0
    for end in sorted(cuts | {len(events)}):
        if end > start:
            batches.append(events[start:end])
            start = end
    for batch in batches:
        with store.begin() as conn:
            write(conn, tables, PROJECTION.apply(batch))
        if redeliver:  # the runner would skip applied ids; the outbox key must too
            with store.begin() as conn:
                write(conn, tables, PROJECTION.apply(batch))
    return states(store)


def interleavings():
    """Partition indexes in some order, each partition's events in their own order."""
    return st.permutations([i for i, s in enumerate(STREAMS) for _ in s])


def test_expected_states(store):
    got = run(store, [i for i, s in enumerate(STREAMS) for _ in s], set(), False)
    assert got == {
        # The second accept loses; the sender withdraws; the arrival comes too late.
        "township-1.sr0": ("cancelled", "county-1", "王医生", (True, True, False, True, False)),
        "township-2.sr1": ("rejected", "county-1", "王医生", (True, True, False, False, False)),
        "community-1.sr2": ("cancelled", "city-1", "王医生", (True, True, False, True, False)),
    }


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(interleavings(), st.sets(st.integers(1, 14)), st.booleans())
def test_any_interleaving_and_batching_gives_the_same_states(store, order, cuts, redeliver):
    expected = run(store, [i for i, s in enumerate(STREAMS) for _ in s], set(), False)
    assert run(store, list(order), cuts, redeliver) == expected


def test_incoming_lists_open_referrals_and_drops_settled_ones(store):
    tables = fresh(store)
    sr = referral("township-1", "sr9", "p9", "urgent")
    accept = task("t9", "township-1.sr9", "township-1.p9", "accepted", "王医生")
    cancel = task("c9", "sr9", "p9", "cancelled", "张医生")
    for i, (facility, res) in enumerate((("township-1", sr), ("county-1", accept),
                                         ("township-1", cancel))):
        with store.begin() as conn:
            write(conn, tables, PROJECTION.apply([Event.from_envelope(
                envelope(res, facility, members=REGISTRY), "t", 0, i)]))
        work = read.incoming(store, REGISTRY, POLICY, "county-1")
        assert [(f.request.id, f.referral.state) for f in work] == (
            [("township-1.sr9", "requested")], [("township-1.sr9", "accepted")], [])[i]
    # Settled: not folded again for open worklists, still there for any other question.
    assert read.incoming(store, REGISTRY, POLICY, "county-1") == []
    (one,) = read.incoming(store, REGISTRY, POLICY, "county-1", frozenset({"cancelled"}))
    assert one.referral.state == "cancelled" and one.referral.holder == "county-1"
