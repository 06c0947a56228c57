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


def consent(provision: dict, cid: str = "c1", pid: str = "p1", status: str = "active") -> dict:
    """A patient's privacy Consent (opt-out) with ``provision``."""
    return {"resourceType": "Consent", "id": cid, "status": status,
            "scope": {"coding": [{"system":
                                  "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"},
            "policyRule": {"coding": [{"system":
                                       "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTOUT"}]},
            "provision": provision}


def consent_actor(system: str | None, value: str) -> dict:
    """A consent actor: ``Organization/<value>`` (system None) or an identifier."""
    ref = {"reference": f"Organization/{value}"} if system is None else {
        "identifier": {"system": system, "value": value}}
    return {"role": {"coding": [{"system":
                                 "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]}, "reference": ref}
