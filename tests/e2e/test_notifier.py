"""The example downstream app end to end: `hub app notifier` as its own process on the real
bundled broker, beside a running hub; a township refers a patient through the gateway, the
county hospital files an abnormal result and an imaging report for them, and the clinic's
notifications arrive on the app's topic (and on its console)."""

from __future__ import annotations

import asyncio
import queue
import signal
import threading

import pytest

from adapters.apps.clinic import Notification
from tests.e2e.test_imaging import study
from tests.e2e.test_referral import referral
from tests.support.events import read_json_topic
from tests.support.hub_server import put_resource, running_hub
from tests.support.proc import hub_env, spawn
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract, pytest.mark.slow]
T1, COUNTY = "demo-secret-township-1", "demo-secret-county-1"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


class Console:
    """The lines a process prints, read on a thread so waiting for one never blocks."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._matched: set[int] = set()
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream],
                         daemon=True).start()

    async def line_with(self, text: str, timeout: float = 60.0) -> str:
        # Lines come in any order: one read while waiting for another may be the one asked
        # for now.
        for n, line in enumerate(self.seen):
            if text in line and n not in self._matched:
                self._matched.add(n)
                return line
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                line = await asyncio.to_thread(self.lines.get, True, 0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                self._matched.add(len(self.seen) - 1)
                return line
        raise AssertionError(f"no line with {text!r}; printed: {self.seen}")


def glucose(oid: str, value: float, flag: str, hub_clock) -> dict:
    return {**observation(oid, pid="township-1.p1", value=value,
                          updated=hub_clock.on(-1, "09:00:00")),
            "effectiveDateTime": hub_clock.on(-1, "08:30:00"),
            "interpretation": [{"coding": [{"system": V3, "code": flag}]}]}


async def test_a_referred_patients_abnormal_result_and_report_reach_the_clinic(
        make_settings, hub_clock):
    settings = make_settings()
    to = f"{settings.group_prefix}.notifications"
    async with running_hub(settings) as (_, base):
        app = spawn("app", "notifier", "--facility", "township-1", "--to", to,
                    env=hub_env(settings, settings.db_url, PYTHONUNBUFFERED="1",
                                COLUMNS="300"))
        out = Console(app.stdout)
        try:
            await out.line_with("notifier for township-1", timeout=120)
            await put_resource(base, T1, patient("p1"))
            await put_resource(base, T1, study("s1", "CT", hub_clock.on(-1, "08:00:00")))
            await put_resource(base, T1, referral("sr1", "p1", "cardiology", "stat"))
            await out.line_with("watching township-1.p1")

            # The county hospital files for the township's patient (the gateway keys it so).
            await put_resource(base, COUNTY, glucose("g-normal", 5.1, "N", hub_clock))
            await put_resource(base, COUNTY, glucose("g-high", 13.4, "H", hub_clock))
            await put_resource(base, COUNTY, {
                "resourceType": "DiagnosticReport", "id": "ct-1", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                    "v2-0074", "code": "RAD"}]}],
                "code": {"text": "CT chest"}, "subject": {"reference": "Patient/township-1.p1"},
                "imagingStudy": [{"reference": "ImagingStudy/township-1.s1"}],
                "issued": hub_clock.on(-1, "10:00:00"), "conclusion": "右下肺小结节"})
            # A patient nobody referred: no notification.
            await put_resource(base, T1, patient("p2", "MRN2"))
            await put_resource(base, COUNTY, {**glucose("g-other", 15.0, "HH", hub_clock),
                                              "subject": {"reference": "Patient/township-1.p2"}})

            said = [(await out.line_with(f"township-1: {what} for township-1.p1")).strip()
                    for what in ("abnormal result", "final report")]
            # Both told; a little longer for a third (the patient nobody referred) that must
            # not come.
            got = [Notification.model_validate(m)
                   for m in await read_json_topic(settings, to, 3, timeout=8)]
            assert sorted((n.kind, n.subject) for n in got) == [
                ("abnormal-result", "Observation/county-1.g-high"),
                ("report", "DiagnosticReport/county-1.ct-1")], got
            assert {(n.facility, n.patient, n.referral, n.source) for n in got} == {
                ("township-1", "township-1.p1", "ServiceRequest/township-1.sr1", "county-1")}
            assert sorted(said) == sorted(f"township-1: {n.summary}" for n in got)
        finally:
            app.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(app.wait, 60)
        assert code == 0, out.seen
