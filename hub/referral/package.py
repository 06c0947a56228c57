"""The record package a receiving facility sees for a referred patient, in one answer.

Across every facility record the patient index links: recent lab results each with its
mutual-recognition status as of today, imaging and ECG studies with their reports, active
medication and problems where facilities sent them, and the referral's own evidence. As
JSON, or as a FHIR ``collection`` Bundle of the resources themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from hub.imaging import read as img
from hub.lab import read as lab_read
from hub.recognition.rules import Catalogue, PriorResult, consortium_day, valid_through, why_not
from hub.record.read import get_resource, search
from hub.referral.read import Folded
from hub.registry.model import FacilityRecord
from hub.store.db import Store

EXT_RECOGNITION = "urn:hie:ext:recognition-status"
LAB_LIMIT = 50
ACTIVE_MEDICATION = {"active", "intended", "on-hold"}
# (resource type, how it says it is current) for medication and problems.
CURRENT = (("MedicationStatement", "status"), ("MedicationRequest", "status"),
           ("Condition", "clinicalStatus"))


def recognition_status(catalogue: Catalogue, registry: Mapping[str, FacilityRecord],
                       row: Mapping, today: date) -> dict:
    """Whether a lab result may stand in for a re-test today, per catalogue item."""
    loinc = row["loinc"]
    if loinc and loinc in catalogue.negative_loinc:
        return {"status": "never-recognised", "why": "on the negative list"}
    items = [it for it in catalogue.items.values() if loinc and loinc in it.loinc]
    if not items or not row["effective"]:
        return {"status": "not-in-catalogue"}
    facility = row["performer"] or row["id"].partition(".")[0]
    prior = PriorResult(row["id"], "lab", facility, row["effective"], row["status"],
                        loinc=loinc)
    for item in items:
        why = why_not(item, prior, registry.get(facility), today)
        if why is None:
            return {"status": "recognisable", "item": item.code,
                    "valid_through": valid_through(consortium_day(row["effective"]),
                                                   item).isoformat()}
    return {"status": "not-recognisable", "item": items[0].code,
            "why": why_not(items[0], prior, registry.get(facility), today)}


def _current(resource: dict, field: str) -> bool:
    value = resource.get(field)
    if isinstance(value, dict):  # Condition.clinicalStatus is a CodeableConcept
        codes = {c.get("code") for c in value.get("coding") or ()}
        return bool(codes & {"active", "recurrence", "relapse"})
    return value in ACTIVE_MEDICATION


def assemble(store: Store, registry: Mapping[str, FacilityRecord], catalogue: Catalogue,
             folded: Folded, keys: Sequence[str], today: date) -> dict:
    """The package as JSON: lab, imaging, medication, problems, evidence."""
    _, rows = lab_read.search_results(store, keys, (), (), True, LAB_LIMIT, 0)
    labs = [{"id": f"Observation/{r['id']}", "facility": r["performer"] or
             r["id"].partition(".")[0], "display": r["display"], "loinc": r["loinc"],
             "value": r["value_num"] if r["value_num"] is not None else r["value_text"],
             "unit": r["unit"], "effective": r["effective"], "status": r["status"],
             "flag": r["flag"], "recognition": recognition_status(catalogue, registry, r, today)}
            for r in rows if r["visible"]]
    current: dict[str, list[dict]] = {}
    for rtype, field in CURRENT:
        _, page = search(store, rtype, keys, None, 200, 0)
        current[rtype] = [res for res, _ in page if _current(res, field)]
    evidence = []
    for ref in folded.request.evidence:
        rtype, _, rid = ref.partition("/")
        found = get_resource(store, rtype, rid)
        evidence.append({"reference": ref, "resource": found.resource if found else None})
    return {"referral": folded.detail(), "records": list(keys), "lab": labs,
            "imaging": img.history(store, keys),
            "medication": current["MedicationStatement"] + current["MedicationRequest"],
            "problems": current["Condition"], "evidence": evidence}


def bundle(store: Store, package: dict, base_url: str) -> dict:
    """The same package as a FHIR R4B ``collection`` Bundle of the resources."""
    resources: list[dict] = []
    seen: set[str] = set()

    def add(rtype: str, rid: str, extra: dict | None = None) -> None:
        if f"{rtype}/{rid}" in seen:
            return
        found = get_resource(store, rtype, rid)
        if found is None or found.resource is None:
            return
        res = found.resource
        if extra:
            res = {**res, "extension": [*(res.get("extension") or ()), extra]}
        seen.add(f"{rtype}/{rid}")
        resources.append(res)

    add("ServiceRequest", package["referral"]["id"])
    for key in package["records"]:
        add("Patient", key)
    for lab in package["lab"]:
        status = lab["recognition"]
        add("Observation", lab["id"].partition("/")[2],
            {"url": EXT_RECOGNITION, "valueString": status["status"] +
             (f": {status['why']}" if status.get("why") else "")})
    for study in package["imaging"]:
        add("ImagingStudy", study["study_id"])
        if study.get("report_id"):
            add("DiagnosticReport", study["report_id"])
    for res in package["medication"] + package["problems"]:
        add(res["resourceType"], res["id"])
    for item in package["evidence"]:
        rtype, _, rid = item["reference"].partition("/")
        add(rtype, rid)
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"{base_url}/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in resources]}
