"""DICOM headers -> FHIR ImagingStudy: what a PACS drop folder holds, grouped by study.

Only headers are read (pydicom, ``stop_before_pixels``): pixel data stays in the PACS, and
the study names an endpoint where it lives. The ImagingStudy id is derived from the Study
Instance UID, so sending the same study again (more instances, a late series) updates it
instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from hub.clock import CONSORTIUM_TZ  # DICOM dates and times carry no zone

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]")


@dataclass
class Series:
    uid: str
    number: int | None
    modality: str
    description: str | None
    body_part: str | None
    instances: set[str] = field(default_factory=set)


@dataclass
class Study:
    uid: str
    patient_id: str
    patient_name: str | None
    started: str | None
    description: str | None
    accession: str | None
    series: dict[str, Series] = field(default_factory=dict)
    files: int = 0


@dataclass
class Scan:
    studies: dict[str, Study] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def _when(date: str | None, time: str | None) -> str | None:
    if not date:
        return None
    digits = re.sub(r"\D", "", date)
    t = re.sub(r"[^\d]", "", (time or "").split(".")[0]).ljust(6, "0")[:6]
    try:
        dt = datetime.strptime(digits[:8] + t, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return dt.replace(tzinfo=CONSORTIUM_TZ).isoformat()


def read_file(path: Path, scan: Scan) -> None:
    """Add one file's instance to ``scan`` (or the reason it cannot be used)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        scan.problems.append((path, f"not a DICOM file ({type(exc).__name__})"))
        return
    uid, pid = str(ds.get("StudyInstanceUID") or ""), str(ds.get("PatientID") or "").strip()
    if not uid:
        scan.problems.append((path, "no Study Instance UID (0020,000D)"))
        return
    if not pid:
        scan.problems.append((path, f"study {uid}: no Patient ID (0010,0020)"))
        return
    study = scan.studies.get(uid)
    if study is None:
        study = scan.studies[uid] = Study(
            uid, pid, str(ds.get("PatientName") or "") or None,
            _when(ds.get("StudyDate"), ds.get("StudyTime")),
            str(ds.get("StudyDescription") or "") or None,
            str(ds.get("AccessionNumber") or "") or None)
    elif study.patient_id != pid:
        scan.problems.append((path, f"study {uid}: patient {pid!r} differs from "
                                    f"{study.patient_id!r} in its other files"))
        return
    series_uid = str(ds.get("SeriesInstanceUID") or f"{uid}.0")
    series = study.series.get(series_uid)
    if series is None:
        number = ds.get("SeriesNumber")
        series = study.series[series_uid] = Series(
            series_uid, int(number) if number not in (None, "") else None,
            str(ds.get("Modality") or "OT"), str(ds.get("SeriesDescription") or "") or None,
            str(ds.get("BodyPartExamined") or "") or None)
    series.instances.add(str(ds.get("SOPInstanceUID") or path.name))
    study.files += 1


def scan_folder(folder: Path, progress=None) -> Scan:
    scan = Scan()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in files:
        read_file(path, scan)
        if progress is not None:
            progress(1)
    return scan


def study_id(uid: str) -> str:
    return "st-" + hashlib.sha256(uid.encode()).hexdigest()[:24]


def patient_id(value: str) -> str:
    return _ID_CHARS.sub("-", value)[:64]


def imaging_study(study: Study, endpoint: str | None = None) -> dict[str, Any]:
    modalities = list(dict.fromkeys(s.modality for s in study.series.values()))
    res: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": study_id(study.uid), "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.uid}"}],
        "modality": [{"system": DCM, "code": m} for m in modalities],
        "subject": {"reference": f"Patient/{patient_id(study.patient_id)}"},
        "numberOfSeries": len(study.series),
        "numberOfInstances": sum(len(s.instances) for s in study.series.values()),
        "series": [],
    }
    if study.accession:
        res["identifier"].append({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": study.accession})
    if study.started:
        res["started"] = study.started
    if study.description:
        res["description"] = study.description
    if endpoint:
        res["endpoint"] = [{"reference": "Endpoint/pacs",
                            "display": f"{endpoint.rstrip('/')}/studies/{study.uid}"}]
    for s in sorted(study.series.values(), key=lambda x: (x.number or 0, x.uid)):
        entry: dict[str, Any] = {"uid": s.uid, "modality": {"system": DCM, "code": s.modality},
                                 "numberOfInstances": len(s.instances)}
        if s.number is not None:
            entry["number"] = s.number
        if s.description:
            entry["description"] = s.description
        if s.body_part:
            entry["bodySite"] = {"display": s.body_part}
        res["series"].append(entry)
    return res
