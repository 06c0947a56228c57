"""The referral state machine and routing, as pure functions: who may take which step, the
first accept in the log wins, expiry, SLA breach; and a property test that no step outside
the transition table is ever applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.referral import rules
from hub.referral.rules import Policy, Request, Step
from hub.registry.consortium_file import read_consortium

REGISTRY = {f.id: f.record for f in read_consortium(None).facilities}
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
POLICY = Policy({"stat": 30, "urgent": 120}, expiry_hours=48)
UP = Request("township-1.sr1", "township-1.p1", "township-1", "up", "cardiology", "stat")


def at(minutes: float) -> str:
    return rules.stamp(T0 + timedelta(minutes=minutes))


def steps(*moves: tuple[str, str] | tuple[str, str, str | None]) -> list[Step]:
    """The request itself, then each (actor, to[, reason]) one minute apart."""
    out = [Step(1, "e1", UP.sender, rules.REQUESTED, at(0), UP.patient_key)]
    for i, (actor, to, *reason) in enumerate(moves, start=2):
        out.append(Step(i, f"e{i}", actor, to, at(i), UP.patient_key,
                        reason[0] if reason else None, f"doctor-{i}"))
    return out


def fold(s: list[Step], req: Request = UP, now: datetime | None = None) -> rules.Referral:
    found = rules.fold(req, s, rules.receivers(req, REGISTRY), POLICY, now)
    assert found is not None
    return found


def test_routing_follows_the_registry():
    assert rules.receivers(UP, REGISTRY) == ("county-1",)  # its group, the nearest tier up
    community = Request("community-1.sr1", "community-1.p1", "community-1", "up",
                        "cardiology", "routine")
    assert rules.receivers(community, REGISTRY) == ("city-1",)
    to_city = Request(**{**_fields(UP), "tier": "city-hospital"})
    assert rules.receivers(to_city, REGISTRY) == ("city-1",)
    named = Request(**{**_fields(UP), "performer": "city-1"})
    assert rules.receivers(named, REGISTRY) == ("city-1",)
    oncology = Request(**{**_fields(UP), "service": "oncology"})  # only the city treats it
    assert rules.receivers(oncology, REGISTRY) == ("city-1",)
    nobody = Request(**{**_fields(UP), "service": "dermatology"})
    assert rules.receivers(nobody, REGISTRY) == ()
    # Down-referral for rehabilitation: back to the facility that sent the patient up.
    down = Request("county-1.dr1", "township-1.p1", "county-1", "down", "rehabilitation",
                   "routine", closes="township-1.sr1")
    assert rules.receivers(down, REGISTRY) == ("township-1",)
    # A village clinic does no rehabilitation: its group's township centres do.
    from_village = Request(**{**_fields(down), "closes": "village-4.sr1"})
    assert rules.receivers(from_village, REGISTRY) == tuple(f"township-{n}" for n in (1, 2, 3, 4))
    # No up-referral to close: the sender's group, the nearest tier below it.
    direct = Request(**{**_fields(down), "sender": "city-1", "closes": None})
    assert rules.receivers(direct, REGISTRY) == ("community-1", "community-2")


def _fields(r: Request) -> dict:
    return {f: getattr(r, f) for f in r.__slots__}


def test_request_of_a_service_request():
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active",
          "intent": "order", "priority": "stat",
          "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]}],
          "code": {"coding": [{"system": rules.SERVICE_SYSTEM, "code": "cardiology"}]},
          "performerType": {"coding": [{"system": "urn:hie:tier",
                                        "code": "county-hospital"}]},
          "reasonCode": [{"text": "chest pain, ST elevation"}],
          "supportingInfo": [{"reference": "Observation/o1"},
                             {"reference": "ImagingStudy/county-1.s9"}],
          "subject": {"reference": "Patient/p1"}}
    assert rules.is_referral(sr)
    req = rules.request_of(sr, "township-1", "township-1.p1")
    assert req == Request("township-1.sr1", "township-1.p1", "township-1", "up", "cardiology",
                          "stat", None, "county-hospital", None, "chest pain, ST elevation",
                          ("Observation/township-1.o1", "ImagingStudy/county-1.s9"))
    down = rules.request_of({**sr, "basedOn": [{"reference": "ServiceRequest/township-1.sr1"}],
                             "performer": [{"reference": "Organization/township-1"}]},
                            "county-1", "township-1.p1")
    assert (down.direction, down.closes, down.performer) == ("down", "township-1.sr1",
                                                              "township-1")
    assert not rules.is_referral({**sr, "category": []})



def test_a_down_referral_may_go_to_a_family_doctor_team():
    sr_up = {"resourceType": "ServiceRequest", "id": "up-1", "status": "active",
             "intent": "order", "priority": "urgent",
             "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]}],
             "code": {"coding": [{"system": rules.SERVICE_SYSTEM, "code": "cardiology"}]},
             "subject": {"reference": "Patient/home-01"}}
    up = rules.request_of(sr_up, "community-1", "community-1.home-01")
    assert up.team is None
    to_team = {**sr_up, "id": "back-1", "basedOn": [{"reference": f"ServiceRequest/{up.id}"}],
               "code": {"coding": [{"system": rules.SERVICE_SYSTEM, "code": "rehabilitation"}]},
               "performer": [{"reference": "CareTeam/team-c1"},
                             {"reference": "Organization/community-1"}]}
    down = rules.request_of(to_team, "city-1", "community-1.home-01")
    assert (down.direction, down.team, down.performer) == ("down", "team-c1", "community-1")
    assert rules.receivers(down, REGISTRY) == ("community-1",)
    # The team alone: the patient goes back where the up-referral came from, the team's own.
    alone = rules.request_of({**to_team, "performer": [{"reference": "CareTeam/team-c1"}]},
                             "city-1", "community-1.home-01")
    assert (alone.team, alone.performer) == ("team-c1", None)
    assert rules.receivers(alone, REGISTRY) == ("community-1",)

def test_the_whole_loop_and_who_may_do_what():
    ref = fold(steps(("county-1", "accepted"), ("county-1", "in-progress"),
                     ("county-1", "completed")))
    assert (ref.state, ref.holder, ref.clinician) == ("completed", "county-1", "doctor-2")
    assert ref.accepted_at == at(2) and ref.arrived_at == at(3) and ref.closed_at == at(4)
    assert all(h["applied"] for h in ref.history)

    refused = fold(steps(("township-1", "accepted"), ("city-1", "accepted"),
                         ("county-1", "rejected"), ("county-1", "in-progress")))
    assert refused.state == "requested"
    assert [h["refused"] for h in refused.history[1:]] == [
        "township-1 is not a receiver of this referral",
        "city-1 is not a receiver of this referral",
        "a rejection needs a reason (Task.statusReason)",
        "the patient can arrive only at an accepted referral (it is requested)"]

    rejected = fold(steps(("county-1", "rejected", "no-capacity"), ("county-1", "accepted")))
    assert (rejected.state, rejected.rejected_reason) == ("rejected", "no-capacity")
    assert rejected.history[-1]["refused"] == "the referral is already rejected"


def test_of_two_accepts_the_first_in_the_log_wins():
    ref = fold(steps(("county-1", "accepted"), ("county-1", "accepted")))
    assert (ref.state, ref.clinician) == ("accepted", "doctor-2")
    assert ref.history[2]["refused"] == "the referral is already accepted by county-1 (doctor-2)"


def test_cancel_rules():
    assert fold(steps(("township-1", "cancelled"))).state == "cancelled"
    assert fold(steps(("county-1", "cancelled"))).state == "requested"  # not its request
    assert fold(steps(("county-1", "accepted"), ("county-1", "cancelled"))).state == \
        "cancelled"  # the patient did not come
    late = fold(steps(("county-1", "accepted"), ("county-1", "in-progress"),
                      ("township-1", "cancelled")))
    assert late.state == "in-progress"
    assert late.history[-1]["refused"] == "a referral in progress is completed, not cancelled"


def test_a_step_under_another_key_is_refused():
    s = steps()
    s.append(Step(2, "e2", "county-1", "accepted", at(1), "county-1"))
    ref = fold(s)
    assert ref.state == "requested" and "name the patient in Task.for" in \
        ref.history[-1]["refused"]


def test_a_step_before_the_request_is_refused():
    early = Step(0, "e0", "county-1", "accepted", at(-1), UP.patient_key)
    ref = fold([early, *steps()])
    assert ref.state == "requested" and ref.history[0]["refused"] == "no request yet"
    assert rules.fold(UP, [early], ("county-1",), POLICY) is None


def test_expiry_and_sla_breach():
    waiting = fold(steps())
    assert rules.due_and_breach(UP, waiting, POLICY, T0 + timedelta(minutes=29)) == (
        at(30), False)
    assert rules.due_and_breach(UP, waiting, POLICY, T0 + timedelta(minutes=31)) == (
        at(30), True)
    in_time = fold(steps(("county-1", "accepted")))
    assert rules.due_and_breach(UP, in_time, POLICY, T0 + timedelta(days=1))[1] is False
    s = steps()
    s.append(Step(2, "e2", "county-1", "accepted", at(45), UP.patient_key))
    assert rules.due_and_breach(UP, fold(s), POLICY, T0 + timedelta(days=1))[1] is True
    routine = Request(**{**_fields(UP), "priority": "routine"})
    assert rules.due_and_breach(routine, fold(steps(), routine), POLICY, T0 + timedelta(
        days=9)) == (None, False)
    # Nobody answered within 48 hours: expired, now and for a late accept alike.
    assert fold(steps(), now=T0 + timedelta(hours=49)).state == "expired"
    s = steps()
    s.append(Step(2, "e2", "county-1", "accepted", at(49 * 60), UP.patient_key))
    ref = fold(s)
    assert ref.state == "expired" and ref.history[-1]["refused"] == \
        "the referral is already expired"


# The transition table, written out independently of the rules: (from, to, role).
LEGAL = {
    ("requested", "requested", "sender"),
    ("requested", "accepted", "receiver"), ("requested", "rejected", "receiver"),
    ("requested", "cancelled", "sender"),
    ("accepted", "in-progress", "holder"), ("accepted", "cancelled", "sender"),
    ("accepted", "cancelled", "holder"),
    ("in-progress", "completed", "holder"),
}
ACTORS = ("township-1", "county-1", "city-1", "village-1")
moves = st.lists(st.tuples(st.sampled_from(ACTORS),
                           st.sampled_from(("requested", *sorted(rules.TASK_STATES))),
                           st.sampled_from((None, "no-capacity")),
                           st.integers(0, 3000)), max_size=12)


@settings(max_examples=400, deadline=None)
@given(moves)
def test_no_illegal_transition_is_ever_applied(drawn):
    s = [Step(1, "e1", UP.sender, rules.REQUESTED, at(0), UP.patient_key)]
    minute = 0
    for i, (actor, to, reason, gap) in enumerate(drawn, start=2):
        minute += gap
        s.append(Step(i, f"e{i}", actor, to, at(minute), UP.patient_key, reason))
    ref = fold(s)
    state, holder, accepts = "requested", None, 0
    for step, h in zip(s, ref.history, strict=True):
        if step.at > rules.stamp(POLICY.expires(at(0))) and state == "requested":
            state = "expired"
        roles = {r for r, ok in (("sender", step.actor == UP.sender),
                                 ("receiver", step.actor == "county-1"),
                                 ("holder", step.actor == holder)) if ok}
        legal = any((state, step.to, role) in LEGAL for role in roles) and not (
            step.to == "rejected" and not step.reason)
        assert h["applied"] == legal, (state, step, h)
        if h["applied"]:
            accepts += step.to == "accepted"
            if step.to in ("accepted", "rejected"):
                holder = step.actor
            state = step.to
    assert ref.state == state and accepts <= 1


@settings(max_examples=200, deadline=None)
@given(moves, st.randoms(use_true_random=False))
def test_the_state_depends_on_log_order_only_not_on_arrival(drawn, rnd):
    s = steps(*[(actor, to, reason) for actor, to, reason, _ in drawn])
    shuffled = list(s)
    rnd.shuffle(shuffled)
    assert fold(shuffled) == fold(s)
