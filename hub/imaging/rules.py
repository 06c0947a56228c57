"""Exam at the grassroots, reading at the upper tier: the rules, free of I/O.

A study's *service* (imaging, ECG, pathology) follows from its modality; the registry says
which reading centre serves each facility for each service. Priorities follow FHIR's
request priority; each has a turnaround target (SLA) the worklist flags when it is missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

PRIORITIES = ("stat", "asap", "urgent", "routine")
RANK = {p: i for i, p in enumerate(PRIORITIES)}
# Minutes from arrival to report. Example values: each consortium sets its own.
SLA_MINUTES = {"stat": 30, "asap": 60, "urgent": 120, "routine": 24 * 60}
ECG_MODALITIES = {"ECG", "HD"}  # DICOM: electrocardiography, haemodynamic waveform
PATHOLOGY_MODALITIES = {"SM", "GM"}  # slide microscopy, general microscopy
REPORT_CATEGORIES = {"RAD", "IMG", "imaging", "EC", "CUS", "CT", "OUS", "CP", "SP", "PAT"}
SHOWN_STUDY = {"registered", "available", "unknown"}
REPORTED = {"final", "amended", "corrected", "appended"}
CLAIM_CODE = "read"
CLAIM_SYSTEM = "urn:hie:imaging"


def modalities(study: dict[str, Any]) -> list[str]:
    codes = [c.get("code") for c in study.get("modality") or ()]
    codes += [(s.get("modality") or {}).get("code") for s in study.get("series") or ()]
    return [c for c in codes if c]


def service_for(codes: list[str]) -> str:
    if any(c in ECG_MODALITIES for c in codes):
        return "ecg"
    if any(c in PATHOLOGY_MODALITIES for c in codes):
        return "pathology"
    return "imaging"


def study_uid(study: dict[str, Any]) -> str | None:
    for i in study.get("identifier") or ():
        if i.get("system") == "urn:dicom:uid" and i.get("value"):
            return str(i["value"]).removeprefix("urn:oid:")
    return None


def hub_ref(reference: str | None, sender: str, rtype: str) -> str | None:
    """``ImagingStudy/township-1.img-1`` (a hub id: another facility's resource) or
    ``ImagingStudy/img-1`` (the sender's own) -> the hub id."""
    if not reference or not reference.startswith(f"{rtype}/"):
        return None
    rid = reference.split("/", 1)[1]
    return rid if "." in rid else f"{sender}.{rid}"


def is_imaging_report(report: dict[str, Any]) -> bool:
    if report.get("imagingStudy"):
        return True
    return any(c.get("code") in REPORT_CATEGORIES for cat in report.get("category") or ()
               for c in cat.get("coding") or ())


def claim_expiry(task: dict[str, Any]) -> str | None:
    return ((task.get("restriction") or {}).get("period") or {}).get("end")


def is_claim(task: dict[str, Any]) -> bool:
    return any(c.get("system") == CLAIM_SYSTEM and c.get("code") == CLAIM_CODE
               for c in (task.get("code") or {}).get("coding") or ())


def due(arrived: str, priority: str) -> datetime:
    start = datetime.fromisoformat(arrived.replace("Z", "+00:00"))
    return start + timedelta(minutes=SLA_MINUTES.get(priority, SLA_MINUTES["routine"]))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: a value that occurred, as turnaround reports use."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
