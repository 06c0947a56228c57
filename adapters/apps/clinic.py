"""The township clinic's notifier, its rules: which feed messages the clinic must hear of.

Pure: no Kafka here (``notifier`` wires these to faststream). A clinic watches the patients
it referred (up or down) and those referred down to it, as long as the referral is alive
(requested, accepted, in progress or completed; not rejected or cancelled). It is told when
one of them gets an abnormal lab result or an imaging/ECG report from another facility.
Patients are matched by the patient key the referral names (``township-1.p-7``), which the
gateway also gives a result another member files for that patient; a result filed under
another facility's record of the same resident is not matched (the read API follows the
patient index for that).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from adapters.apps.feeds import ImagingReport, LabChange, ReferralStep

ALIVE = frozenset({"requested", "accepted", "in-progress", "completed"})
REPORTED = frozenset({"final", "amended", "corrected", "appended"})


class Notification(BaseModel):
    """clinic.notifications.v1: something a clinic should know about a patient it referred.

    Kafka key: the clinic's facility id. At least once: skip an id already seen.
    """

    id: str = Field(description="<facility>:<feed message id>, stable.")
    facility: str = Field(description="The clinic told.")
    patient: str = Field(description="Patient key the referral names.")
    referral: str = Field(description="ServiceRequest/<hub id> of the referral.")
    kind: Literal["abnormal-result", "report"]
    subject: str = Field(description="Observation/<hub id> or DiagnosticReport/<hub id>.")
    source: str = Field(description="The facility that sent the result or report.")
    summary: str = Field(description="One line for the clinic's staff.")


class ClinicWatch:
    """What one clinic has referred, folded from ``hie.referral.v1``, and the decisions."""

    def __init__(self, facility: str) -> None:
        self.facility = facility
        self._referrals: dict[str, ReferralStep] = {}

    def _ours(self, m: ReferralStep) -> bool:
        return m.sender == self.facility or (m.direction == "down"
                                             and self.facility in m.receivers)

    def referral(self, m: ReferralStep) -> bool | None:
        """Fold one step; True when its patient starts being watched, False when stops."""
        if not self._ours(m):
            return None
        before = self.referral_of(m.patient_key)
        self._referrals[m.referral] = m  # a referral's steps arrive in order (one key)
        after = self.referral_of(m.patient_key)
        return None if (before is None) == (after is None) else after is not None

    def referral_of(self, patient: str) -> str | None:
        """The alive referral of ``patient`` this clinic is part of, the latest first."""
        alive = [m for m in self._referrals.values()
                 if m.patient_key == patient and m.state in ALIVE]
        return max(alive, key=lambda m: m.step.at).referral if alive else None

    @property
    def watched(self) -> set[str]:
        return {m.patient_key for m in self._referrals.values() if m.state in ALIVE}

    def on_lab(self, m: LabChange) -> Notification | None:
        referral = self.referral_of(m.patient)
        if referral is None or not m.abnormal or m.performer == self.facility:
            return None
        value = m.value_text if m.value_num is None else f"{m.value_num:g}"
        what = " ".join(x for x in (m.display or m.analyte or m.loinc or "result", value,
                                    m.unit or "", f"({m.flag})") if x)
        return Notification(id=f"{self.facility}:{m.id}", facility=self.facility,
                            patient=m.patient, referral=referral, kind="abnormal-result",
                            subject=m.resource, source=m.performer or "unknown",
                            summary=f"abnormal result for {m.patient}: {what}"
                                    + (f" from {m.performer}" if m.performer else ""))

    def on_report(self, m: ImagingReport) -> Notification | None:
        referral = self.referral_of(m.patient) if m.patient else None
        if referral is None or m.status not in REPORTED or m.reader_facility == self.facility:
            return None
        said = f": {m.conclusion}" if m.conclusion else ""
        return Notification(id=f"{self.facility}:{m.id}", facility=self.facility,
                            patient=m.patient or "", referral=referral, kind="report",
                            subject=m.report, source=m.reader_facility,
                            summary=f"{m.status} report for {m.patient} from "
                                    f"{m.reader_facility}{said}")
