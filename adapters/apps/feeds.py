"""The messages of the hub's change feeds, as pydantic models: the source of their contract.

Every feed message is a JSON value in a CloudEvents 1.0 record in Kafka binary mode: headers
``ce_specversion``, ``ce_id`` (= the message's ``id``), ``ce_source`` ``urn:hie:hub``,
``ce_type`` and ``content-type: application/json``. Delivery is at least once: skip an id
already seen. The JSON Schemas in ``schemas/`` are generated from these models
(``hub app schemas``), and the hub builds its imaging, recognition and referral messages
through them. Unknown fields are ignored, so an app built on this version reads the
messages of a later hub that adds fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Flag = Literal["H", "HH", "L", "LL", "A", "AA", "N"]
ABNORMAL: frozenset[str] = frozenset({"H", "HH", "L", "LL", "A", "AA"})
HUB_ID = r"[a-z0-9][a-z0-9-]*\.[A-Za-z0-9\-.]+$"


class FeedMessage(BaseModel):
    model_config = ConfigDict(frozen=True)


class LabChange(FeedMessage):
    """hie.lab.v1: one message per lab Observation event the hub accepted.

    Kafka key: the patient key. ce_type hie.lab.result.v1. Apply a message only if its
    version is greater than the one held for its resource: a late older version may arrive
    after a newer one.
    """

    type: Literal["hie.lab.result.v1"]
    id: str = Field(description="Stable message id: lab-<source event id>.")
    resource: str = Field(pattern=r"^Observation/" + HUB_ID, description="Hub id of the result.")
    patient: str = Field(description="Patient key <facility>.<patient id>.")
    version: str = Field(description="Sortable version key: "
                         "'<UTC lastUpdated>|<versionId>|<event id>'. Greater is newer.")
    source_event: str
    status: str = Field(description="FHIR Observation status, or 'deleted'.")
    visible: bool = Field(description="false: remove the result from every view "
                          "(entered-in-error, cancelled, deleted).")
    loinc: str | None = None
    analyte: str | None = Field(default=None, description="Canonical analyte key (glucose, "
                                "creatinine, ...) or the LOINC code.")
    display: str | None = None
    effective: str | None = Field(default=None, description="UTC instant.")
    value_num: float | None = None
    value_text: str | None = None
    unit: str | None = None
    value_norm: float | None = Field(default=None,
                                     description="The value in the analyte's canonical unit.")
    unit_norm: str | None = None
    flag: Flag | None = Field(default=None, description="Abnormal flag: H, HH, L, LL, A, AA; "
                              "N normal.")
    flag_source: Literal["interpretation", "reference-range"] | None = None
    ref_low: float | None = None
    ref_high: float | None = None
    specimen: str | None = None
    performer: str | None = Field(default=None,
                                  description="Facility id of the performing laboratory.")

    @property
    def abnormal(self) -> bool:
        return self.visible and self.flag in ABNORMAL


class ImagingReport(FeedMessage):
    """hie.imaging.v1: a reading report back to the facility that took the exam.

    One message per version of an imaging or ECG report (a DiagnosticReport naming an
    ImagingStudy). Kafka key: the acquiring facility's id, so each facility reads its own
    reports. ce_type hie.imaging.report.v1. A newer version (greater version) supersedes an
    older one (amendments, addenda, corrections).
    """

    type: Literal["hie.imaging.report.v1"]
    id: str
    study: str = Field(pattern=r"^ImagingStudy/" + HUB_ID)
    facility: str = Field(description="The acquiring facility (the message's key).")
    patient: str | None = Field(default=None, description="Patient key of the report, "
                                "<facility>.<patient id>; null in messages of hubs before it.")
    report: str = Field(pattern=r"^DiagnosticReport/")
    status: str = Field(description="FHIR DiagnosticReport status: final, amended, corrected, "
                        "appended (addendum), ...")
    conclusion: str | None
    issued: str | None = Field(description="UTC instant.")
    reader_facility: str = Field(description="The reading centre.")
    version: str = Field(description="Sortable version key; greater is newer.")
    source_event: str


class PriorResult(FeedMessage):
    """A recognisable prior result, as the recognition check gives it."""

    result: str
    facility: str
    date: str = Field(description="Consortium (Asia/Shanghai) day of the result.")
    valid_through: str = Field(description="Last day it is recognisable for this item.")
    status: str | None = None
    value: str | None = None
    why: str | None = None
    saves_yuan: int | float | None = None


class PromptItem(FeedMessage):
    item: str
    name: str
    results: list[PriorResult]


class RecognitionPrompt(FeedMessage):
    """hie.recognition.v1: an order-time recognition prompt to the ordering facility.

    Kafka key: the ordering facility's id. ce_type hie.recognition.v1.
    """

    type: Literal["hie.recognition.prompt.v1"]
    id: str = Field(description="rec-prompt-<request>")
    request: str = Field(pattern=r"^ServiceRequest/")
    patient: str = Field(description="Patient key of the ordering facility's record.")
    ordered: str = Field(description="Consortium (Asia/Shanghai) date of the order.")
    mark: str = Field(description="The common recognition mark (HR).")
    items: list[PromptItem] = Field(description="The ordered items with recognisable results.")


class RecognitionWithdrawal(FeedMessage):
    """hie.recognition.v1: a prompt withdrawn because the results it relied on stopped
    qualifying. It cancels the prompt for the same request."""

    type: Literal["hie.recognition.withdrawn.v1"]
    id: str = Field(description="rec-withdrawn-<request>")
    request: str = Field(pattern=r"^ServiceRequest/")
    patient: str
    items: list[str] = Field(description="The item codes no longer recognisable.")
    why: str


RecognitionMessage = RecognitionPrompt | RecognitionWithdrawal
ReferralState = Literal["requested", "accepted", "rejected", "in-progress", "completed",
                        "cancelled", "expired"]


class ReferralStepTaken(FeedMessage):
    to: Literal["requested", "accepted", "rejected", "in-progress", "completed", "cancelled"]
    by: str = Field(description="The facility that took the step.")
    clinician: str | None
    reason: str | None = Field(description="Rejection or withdrawal reason.")
    at: str = Field(description="UTC instant the hub received it.")
    task: str | None = Field(description="Hub id of the Task; null for the request itself.")


class ReferralStep(FeedMessage):
    """hie.referral.v1: one step proposed on a two-way referral and the decision on it.

    The request itself (and each new version of it), and every Task that accepts, rejects,
    records the arrival, completes or cancels it. The hub's state machine decides each step
    in log order: 'applied' says whether it took effect, 'refused' why not (e.g. the second
    of two accepts), 'state' is the referral's state after it. Kafka key: the referral's
    patient key, so one referral's messages keep their order. ce_type hie.referral.step.v1.
    An expiry (nobody answered in time) is not a step: ask GET /referrals/{id}.
    """

    type: Literal["hie.referral.step.v1"]
    id: str
    referral: str = Field(pattern=r"^ServiceRequest/" + HUB_ID)
    patient: str = Field(pattern=r"^Patient/")
    sender: str = Field(description="The facility that sent the referral.")
    direction: Literal["up", "down"]
    service: str
    priority: Literal["stat", "asap", "urgent", "routine"]
    receivers: list[str] = Field(description="Facilities that may accept it, per the request "
                                 "and the registry.")
    step: ReferralStepTaken
    applied: bool
    refused: str | None
    state: ReferralState
    holder: str | None = Field(description="The facility that accepted (or rejected) it.")
    due: str | None = Field(description="Acceptance deadline (green channel SLA); null for "
                            "routine.")
    source_event: str

    @property
    def patient_key(self) -> str:
        return self.patient.removeprefix("Patient/")


AlertChangeKind = Literal["opened", "acknowledged", "resolved", "escalated", "referred"]


class AlertChange(FeedMessage):
    """hie.alerts.v1: a remote-monitoring alert for a family-doctor team, and what happened
    to it.

    One message per change of an alert: opened (the hub's monitor raised it: uncontrolled
    blood pressure or fasting glucose, a critical reading, missing readings), acknowledged
    and resolved (by the team), escalated (to the team's specialist facility: past the SLA,
    or a critical reading), referred (the escalation became an up-referral). Kafka key: the
    patient key, so one resident's messages keep their order. ce_type hie.alerts.v1; ids
    name the alert and the change.
    """

    type: Literal["hie.alerts.v1.opened", "hie.alerts.v1.acknowledged",
                  "hie.alerts.v1.resolved", "hie.alerts.v1.escalated",
                  "hie.alerts.v1.referred"]
    id: str
    alert: str = Field(pattern=r"^DetectedIssue/mon-[0-9a-f]+$")
    patient: str = Field(pattern=r"^Patient/" + HUB_ID)
    change: AlertChangeKind
    at: str = Field(description="UTC instant of the change.")
    kind: Literal["critical-reading", "uncontrolled-bp", "uncontrolled-glucose",
                  "missing-readings"] | None = Field(
        default=None, description="opened: what the rules found.")
    team: str | None = Field(default=None, description="opened: the family-doctor team "
                             "(CareTeam id).")
    severity: Literal["high", "moderate"] | None = Field(
        default=None, description="opened: high for a critical reading.")
    reason: str | None = Field(default=None, description="opened: the finding in words; "
                               "escalated: why.")
    readings: list[Annotated[str, Field(pattern=r"^Observation/")]] = Field(
        default_factory=list, description="opened: the readings the alert relied on.")
    by: str | None = Field(default=None, description="acknowledged, resolved: the facility "
                           "that acted.")
    who: str | None = Field(default=None, description="acknowledged, resolved: the person.")
    to: str | None = Field(default=None, description="escalated, referred: the specialist "
                           "facility.")
    referral: Annotated[str, Field(pattern=r"^ServiceRequest/")] | None = Field(
        default=None, description="referred: the up-referral it became.")
