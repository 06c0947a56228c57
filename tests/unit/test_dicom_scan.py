"""The DICOM adapter on real DICOM files: the test files shipped inside pydicom."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from adapters.dicom.scan import imaging_study, scan_folder, study_id
from hub.fhir import validate

FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    for name in ("CT_small.dcm", "MR_small.dcm", "waveform_ecg.dcm", "ExplVR_BigEnd.dcm"):
        shutil.copy(FILES / name, tmp_path / name)
    (tmp_path / "readme.txt").write_text("exported by the PACS")
    return tmp_path


def test_a_drop_folder_becomes_one_valid_imaging_study_per_study(drop):
    scan = scan_folder(drop)
    studies = {s.patient_id: imaging_study(s, "https://pacs.example/dicomweb")
               for s in scan.studies.values()}
    assert set(studies) == {"1CT1", "4MR1", "642341"}
    for res in studies.values():
        assert validate(res, "ImagingStudy") == []
        assert res["endpoint"][0]["display"].startswith("https://pacs.example/dicomweb/studies/")
    ecg = studies["642341"]
    assert ecg["modality"][0]["code"] == "ECG" and ecg["started"].startswith("2013-01-25")
    assert studies["1CT1"]["numberOfInstances"] == 1
    reasons = {p.name: r for p, r in scan.problems}
    assert reasons == {"ExplVR_BigEnd.dcm": reasons["ExplVR_BigEnd.dcm"],
                       "readme.txt": "not a DICOM file (InvalidDicomError)"}
    assert "no Patient ID" in reasons["ExplVR_BigEnd.dcm"]


def test_sending_a_study_again_updates_it(drop):
    first = imaging_study(next(s for s in scan_folder(drop).studies.values()
                               if s.patient_id == "1CT1"))
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"  # one more image of the same study
    ds.save_as(drop / "CT_small_2.dcm")
    again = imaging_study(next(s for s in scan_folder(drop).studies.values()
                               if s.patient_id == "1CT1"))
    assert again["id"] == first["id"] == study_id(ds.StudyInstanceUID)
    assert (first["numberOfInstances"], again["numberOfInstances"]) == (1, 2)
