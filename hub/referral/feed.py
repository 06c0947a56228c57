"""The ``hie.referral.v1`` change feed: every referral step with the decision made on it.

The projection writes each step to its ``ref_step`` outbox in the transaction that stores it;
this relay (the outbox relay, with the message built at sending time) folds the referral up
to that step and publishes whether the step was applied, why not, and the state after it.
The fold depends only on the steps before it, so the message is the same whenever it is
sent, and after a rebuild the same ids carry the same decisions. Steps about no known
referral are marked sent without a message. Keyed by the referral's patient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from adapters.apps.feeds import ReferralStep, ReferralStepTaken
from hub.engine.outbox import OutboxRelay
from hub.log.producer import Publisher
from hub.referral import read, rules
from hub.referral.projection import REQUESTS, STEPS
from hub.registry.model import FacilityRecord
from hub.store.db import Store

FEED_TYPE = "hie.referral.step.v1"


def messages(store: Store, registry: Mapping[str, FacilityRecord], policy: rules.Policy,
             rows: list) -> list[tuple[bytes, bytes, str]]:
    """(key, payload, feed id) for the outbox ``rows`` that concern a known referral."""
    requests, steps = read.requests_and_steps(
        store, [read.T[REQUESTS].c.referral_id.in_(sorted({r.referral_id for r in rows}))])
    out = []
    for row in rows:
        req = requests.get(row.referral_id)
        if req is None:
            continue
        may = rules.receivers(req, registry)
        before = [st for st in steps.get(req.id, ()) if st.seq <= row.seq]
        ref = rules.fold(req, before, may, policy)
        if ref is None or not ref.history:
            continue
        step, decided = before[-1], ref.history[-1]
        due = policy.due(ref.received, req.priority)
        message = ReferralStep(
            type=FEED_TYPE, id=row.feed_id, referral=f"ServiceRequest/{req.id}",
            patient=f"Patient/{req.patient_key}", sender=req.sender, direction=req.direction,
            service=req.service, priority=req.priority, receivers=list(may),
            step=ReferralStepTaken(to=step.to, by=step.actor, clinician=step.clinician,
                                   reason=step.reason, at=step.at, task=step.task),
            applied=decided["applied"], refused=decided["refused"], state=ref.state,
            holder=ref.holder, due=rules.stamp(due) if due else None,
            source_event=step.event)
        out.append((req.patient_key.encode(), message.model_dump_json().encode(), row.feed_id))
    return out


class ReferralFeedRelay(OutboxRelay):
    """The outbox relay of ``ref_step``, deciding each message as it sends it."""

    def __init__(self, store: Store, publisher: Publisher, topic: str, policy: rules.Policy,
                 registry: Callable[[], Mapping[str, FacilityRecord]]) -> None:
        super().__init__(store, publisher, read.T[STEPS], topic, FEED_TYPE)
        self.policy = policy
        self.registry = registry

    async def relay_once(self, limit: int = 500) -> int:
        rows = await asyncio.to_thread(read.steps_after, self.store, limit)
        if not rows:
            return 0
        built = await asyncio.to_thread(messages, self.store, self.registry(), self.policy,
                                        rows)
        records = [self.record(key, payload, fid) for key, payload, fid in built]
        if records:
            await self.publisher.publish_raw(self.topic, records)
        await asyncio.to_thread(self._mark, [r.seq for r in rows])
        self.sent += len(records)
        return len(rows)
