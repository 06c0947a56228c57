"""The example notifier's logic on faststream's in-memory broker (TestKafkaBroker): the same
subscribers and publisher as `hub app notifier`, no Kafka; and its rule of whom a clinic
watches, over any sequence of referral steps."""

from __future__ import annotations

import pytest
from faststream.kafka import TestKafkaBroker
from hypothesis import given
from hypothesis import strategies as st

from adapters.apps.clinic import ClinicWatch
from adapters.apps.feeds import LabChange, ReferralStep
from adapters.apps.notifier import Notifier
from hub.config import Settings

T = Settings().topics


def step(state: str, to: str, *, sender: str = "township-1", patient: str = "township-1.p1",
         referral: str = "township-1.sr1", direction: str = "up",
         receivers: tuple[str, ...] = ("county-1",), at: str = "2026-03-01T08:00:00Z") -> dict:
    return {"type": "hie.referral.step.v1", "id": f"ref-{referral}-{to}",
            "referral": f"ServiceRequest/{referral}", "patient": f"Patient/{patient}",
            "sender": sender, "direction": direction, "service": "cardiology",
            "priority": "stat", "receivers": list(receivers),
            "step": {"to": to, "by": sender, "clinician": None, "reason": None, "at": at,
                     "task": None},
            "applied": True, "refused": None, "state": state, "holder": None, "due": None,
            "source_event": "e-ref", "added_by_a_later_hub": "ignored"}


def lab(oid: str, flag: str | None, patient: str = "township-1.p1",
        performer: str = "county-1", visible: bool = True) -> dict:
    return {"type": "hie.lab.result.v1", "id": f"lab-{oid}",
            "resource": f"Observation/county-1.{oid}", "patient": patient,
            "version": "2026-03-01T09:00:00Z|1|e", "source_event": f"e-{oid}",
            "status": "final", "visible": visible, "display": "Glucose", "value_num": 11.2,
            "unit": "mmol/L", "flag": flag, "performer": performer}


def report(rid: str, patient: str | None = "township-1.p1", status: str = "final",
           reader: str = "county-1") -> dict:
    return {"type": "hie.imaging.report.v1", "id": f"img-{rid}",
            "study": "ImagingStudy/county-1.s1", "facility": "county-1", "patient": patient,
            "report": f"DiagnosticReport/county-1.{rid}", "status": status,
            "conclusion": "右下肺结节", "issued": "2026-03-01T10:00:00Z",
            "reader_facility": reader, "version": "v", "source_event": f"e-{rid}"}


@pytest.fixture
async def app():
    said: list[str] = []
    notifier = Notifier(Settings(), "township-1", say=said.append)
    async with TestKafkaBroker(notifier.broker) as broker:
        yield notifier, broker, said


async def test_abnormal_results_and_reports_of_referred_patients_are_told(app):
    notifier, broker, said = app
    await broker.publish(lab("before", "H"), topic=T.lab)  # not referred yet
    await broker.publish(step("requested", "requested"), topic=T.referral)
    assert said == ["watching township-1.p1 (referral ServiceRequest/township-1.sr1, "
                    "requested)"]
    await broker.publish(lab("o1", "HH"), topic=T.lab)
    await broker.publish(lab("o2", "N"), topic=T.lab)  # normal
    await broker.publish(lab("o3", None), topic=T.lab)  # no flag at all
    await broker.publish(lab("o4", "L", patient="township-1.p2"), topic=T.lab)  # not referred
    await broker.publish(lab("o5", "H", performer="township-1"), topic=T.lab)  # its own
    await broker.publish(lab("o6", "H", visible=False), topic=T.lab)  # withdrawn
    await broker.publish(report("r1"), topic=T.imaging)
    await broker.publish(report("r2", status="preliminary"), topic=T.imaging)
    await broker.publish(report("r3", patient=None), topic=T.imaging)  # an older hub's
    sent = [c.args[0] for c in notifier.out.mock.call_args_list]
    assert [(n["kind"], n["subject"], n["id"]) for n in sent] == [
        ("abnormal-result", "Observation/county-1.o1", "township-1:lab-o1"),
        ("report", "DiagnosticReport/county-1.r1", "township-1:img-r1")]
    assert sent[0]["referral"] == "ServiceRequest/township-1.sr1"
    assert sent[0]["summary"] == ("abnormal result for township-1.p1: Glucose 11.2 mmol/L "
                                  "(HH) from county-1")
    assert sent[1]["summary"] == "final report for township-1.p1 from county-1: 右下肺结节"
    assert said[1:] == [f"township-1: {n['summary']}" for n in sent]
    assert notifier.sent == 2


async def test_a_cancelled_or_rejected_referral_stops_the_watch(app):
    notifier, broker, said = app
    await broker.publish(step("accepted", "accepted"), topic=T.referral)
    await broker.publish(step("cancelled", "cancelled", at="2026-03-01T09:00:00Z"),
                         topic=T.referral)
    await broker.publish(lab("o1", "H"), topic=T.lab)
    notifier.out.mock.assert_not_called()
    assert said[-1].startswith("no longer watching township-1.p1")
    # Another clinic's referrals are not this one's business; a down-referral to it is.
    await broker.publish(step("accepted", "accepted", sender="township-2",
                              patient="township-2.p9", referral="township-2.sr9"),
                         topic=T.referral)
    await broker.publish(step("requested", "requested", sender="county-1", direction="down",
                              patient="township-1.p3", referral="county-1.dr1",
                              receivers=("township-1",)), topic=T.referral)
    assert notifier.watch.watched == {"township-1.p3"}


def test_the_latest_alive_referral_names_the_notification():
    watch = ClinicWatch("township-1")
    watch.referral(ReferralStep.model_validate(step("rejected", "rejected")))
    assert watch.referral_of("township-1.p1") is None
    watch.referral(ReferralStep.model_validate(step(
        "accepted", "accepted", referral="township-1.sr2", at="2026-03-02T08:00:00Z")))
    watch.referral(ReferralStep.model_validate(step(
        "requested", "requested", referral="township-1.sr3", at="2026-03-03T08:00:00Z")))
    n = watch.on_lab(LabChange.model_validate(lab("o1", "LL")))
    assert n is not None and n.referral == "ServiceRequest/township-1.sr3"


REFERRALS = {  # referral -> (sender, direction, receivers, patient)
    "township-1.sr1": ("township-1", "up", ("county-1",), "township-1.p1"),
    "township-1.sr2": ("township-1", "up", ("city-1",), "township-1.p1"),
    "county-1.dr3": ("county-1", "down", ("township-1",), "township-1.p2"),
    "township-2.sr4": ("township-2", "up", ("county-1",), "township-1.p2"),
}
STATES = ("requested", "accepted", "rejected", "in-progress", "completed", "cancelled")


@given(st.lists(st.tuples(st.sampled_from(sorted(REFERRALS)), st.sampled_from(STATES)),
                max_size=12))
def test_a_patient_is_watched_while_one_of_the_clinics_referrals_is_alive(steps):
    watch = ClinicWatch("township-1")
    last: dict[str, str] = {}
    for i, (ref, state) in enumerate(steps):
        sender, direction, receivers, patient = REFERRALS[ref]
        watch.referral(ReferralStep.model_validate(step(
            state, state, sender=sender, patient=patient, referral=ref, direction=direction,
            receivers=receivers, at=f"2026-03-01T08:{i:02d}:00Z")))
        last[ref] = state
    ours = {"township-1.sr1", "township-1.sr2", "county-1.dr3"}  # sent by it, or down to it
    alive = {"requested", "accepted", "in-progress", "completed"}
    for patient in ("township-1.p1", "township-1.p2"):
        live = [r for r in ours if REFERRALS[r][3] == patient and last.get(r) in alive]
        n = watch.on_lab(LabChange.model_validate(lab("o", "H", patient=patient)))
        assert (n is not None) == bool(live)
        if n is not None:  # the referral most recently stepped
            latest = max(live, key=lambda r: max(i for i, (x, _) in enumerate(steps) if x == r))
            assert n.referral == f"ServiceRequest/{latest}"
