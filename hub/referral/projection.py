"""Referrals folded from the log: the requests, and every proposed step in log order.

The projection does not decide: it keeps the newest version of each referral request and
appends each step (a request version, a Task moving it, a withdrawal) to ``ref_step``, whose
``seq`` is the order in which the steps were applied. One referral's steps share its
patient's log key, so they sit in one partition and a rebuild from the journal appends them
in the same order; the state is then the pure fold of ``hub.referral.rules`` over them, the
same live and rebuilt. ``ref_step`` is also the outbox of ``hie.referral.v1``: its relay
(``hub.referral.feed``) publishes each step with the decision the fold made about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE
from hub.record.rules import version_order
from hub.referral import rules
from hub.store.schema import outbox_table

REQUESTS, STEPS = "ref_request", "ref_step"
WITHDRAWN = {"revoked", "entered-in-error"}


class ReferralProjection:
    name = "referral"
    version = 2  # 2: the family-doctor team a down-referral names

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        s = suffix
        text = sa.String(200)
        requests = sa.Table(
            REQUESTS + s, metadata,
            sa.Column("referral_id", text, primary_key=True),
            sa.Column("patient_key", text, nullable=False),
            sa.Column("sender", sa.String(64), nullable=False),
            sa.Column("direction", sa.String(8), nullable=False),
            sa.Column("service", sa.String(64), nullable=False),
            sa.Column("priority", sa.String(10), nullable=False),
            sa.Column("performer", sa.String(64)),
            sa.Column("team", sa.String(64)),
            sa.Column("tier", sa.String(40)),
            sa.Column("closes", text),
            sa.Column("reason", sa.Text),
            sa.Column("evidence", sa.Text, nullable=False),
            sa.Column("order_key", sa.String(320), nullable=False),
        )
        sa.Index(f"ix_{requests.name}_closes", requests.c.closes)
        # The outbox shape (seq, feed_id, patient_key, payload, sent) plus the referral.
        steps = outbox_table(STEPS + s, metadata)
        steps.append_column(sa.Column("referral_id", text, nullable=False))
        sa.Index(f"ix_{steps.name}_referral", steps.c.referral_id, steps.c.seq)
        return {REQUESTS: requests, STEPS: steps}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            rtype = e.resource_type
            if e.source == HUB_SOURCE or rtype not in ("ServiceRequest", "Task"):
                continue
            sender = e.facility_id
            if e.is_delete:
                if rtype == "ServiceRequest":  # a referral nobody may see again is withdrawn
                    out.append(_step(e, f"{sender}.{e.resource_id}", rules.Step(
                        0, e.id, sender, rules.CANCELLED, e.time, e.key, "deleted")))
                continue
            res = orjson.loads(e.data)
            if rtype == "ServiceRequest":
                if rules.is_referral(res):
                    out += _request(e, res, sender)
                continue
            found = rules.step_of(res, sender, 0, e.id, e.time, e.key)
            if found is not None:
                out.append(_step(e, found[0], found[1]))
        return out


def _request(e: Event, res: dict, sender: str) -> list[Change]:
    req = rules.request_of(res, sender, e.key)
    meta = res.get("meta") or {}
    okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), e.time) + f"|{e.id}"
    status = res.get("status")
    to = rules.CANCELLED if status in WITHDRAWN else rules.REQUESTED
    return [Upsert(REQUESTS, {
        "referral_id": req.id, "patient_key": req.patient_key, "sender": sender,
        "direction": req.direction, "service": req.service, "priority": req.priority,
        "performer": req.performer, "team": req.team, "tier": req.tier,
        "closes": req.closes,
        "reason": req.reason, "evidence": orjson.dumps(list(req.evidence)).decode(),
        "order_key": okey}, ("referral_id",), guard="order_key"),
        _step(e, req.id, rules.Step(0, e.id, sender, to, e.time, e.key,
                                    status if to == rules.CANCELLED else None))]


def _step(e: Event, referral: str, step: rules.Step) -> Upsert:
    payload = {"event": step.event, "actor": step.actor, "to": step.to, "at": step.at,
               "key": step.key, "reason": step.reason, "clinician": step.clinician,
               "task": step.task}
    return Upsert(STEPS, {"feed_id": f"ref-{e.id}", "patient_key": e.key,
                          "payload": orjson.dumps(payload), "sent": False,
                          "referral_id": referral}, ("feed_id",), replace=False)


def step_from_row(seq: int, payload: bytes) -> rules.Step:
    p = orjson.loads(payload)
    return rules.Step(seq, p["event"], p["actor"], p["to"], p["at"], p["key"], p["reason"],
                      p["clinician"], p["task"])
