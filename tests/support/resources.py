"""Builders of valid FHIR resources for tests (plain dicts)."""

from __future__ import annotations


def patient(pid: str = "p1", mrn: str = "MRN1") -> dict:
    return {"resourceType": "Patient", "id": pid,
            "identifier": [{"system": "urn:hie:facility:x:mrn", "value": mrn}],
            "name": [{"text": "王秀英", "family": "王", "given": ["秀英"]}],
            "gender": "female", "birthDate": "1958-03-02"}


def observation(oid: str = "o1", pid: str = "p1", value: float = 6.1, version: int = 1,
                updated: str = "2026-11-01T08:00:00+08:00", status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": status,
            "meta": {"versionId": str(version), "lastUpdated": updated},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0",
                                 "display": "Glucose"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-11-01T07:30:00+08:00",
            "valueQuantity": {"value": value, "unit": "mmol/L",
                              "system": "http://unitsofmeasure.org", "code": "mmol/L"}}


def bundle(kind: str, *resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}
