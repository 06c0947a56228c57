"""The CapabilityStatement: exactly what this hub serves, built from the code that serves it.

Types are the ones validation accepts (``hub.fhir.ACCEPTED_TYPES``; a search or read of any
other is a 404), search parameters the ones the read API takes (anything else is a 400),
and the FHIR version the one the models validate against.
"""

from __future__ import annotations

import hub
from hub.api.read import AUDIT_SCOPE, BASE_PARAMS, LAB_PARAMS, REPORT_PARAMS
from hub.fhir import ACCEPTED_TYPES, FHIR_VERSION

_PARAM_TYPES = {"patient": "reference", "subject": "reference", "_id": "token",
                "code": "token", "category": "token", "date": "date", "_sort": "string",
                "_count": "number", "_offset": "number"}
_WRITE = ("create", "update", "delete")
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
_EXPORT_DOC = ("FHIR Bulk Data, asynchronous (Prefer: respond-async); _type, _since, "
               "_outputFormat=application/fhir+ndjson, and _deidentify=true for the "
               "de-identified variant; a patient's Consent is honoured")

def _params(names: set[str]) -> list[dict]:
    return [{"name": n, "type": _PARAM_TYPES[n]} for n in sorted(names)]


def _resource(rtype: str) -> dict:
    names = set(BASE_PARAMS)
    if rtype == "Observation":
        names |= LAB_PARAMS
    elif rtype == "DiagnosticReport":
        names |= REPORT_PARAMS
    out = {
        "type": rtype,
        "interaction": [{"code": c} for c in ("read", "search-type", *_WRITE)],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "local"],
        "searchParam": _params(names),
    }
    if rtype == "Patient":
        out["operation"] = [{"name": "lab-summary",
                             "definition": "urn:hie:OperationDefinition:lab-summary"},
                            {"name": "export", "definition": _BULK + "patient-export",
                             "documentation": _EXPORT_DOC}]
    return out


def capability_statement() -> dict:
    audit = {"type": "AuditEvent", "interaction": [{"code": "search-type"}],
             "searchParam": _params({"patient", "_count", "_offset"}),
             "documentation": f"a patient's audit trail; needs the {AUDIT_SCOPE!r} scope"}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "software": {"name": "hie-hub", "version": hub.__version__},
        "implementation": {"description": "HIE hub: the consortium's shared record"},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "rest": [{
            "mode": "server",
            "documentation": "Bundles: transaction and batch (POST /fhir), and collection; "
                             "no DELETE or operation entries. Conditional create and update "
                             "match on identifier=system|value only.",
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": [_resource(t) for t in ACCEPTED_TYPES] + [audit],
            # Group/{id}/$export names a group of facilities (a registry group or
            # tier-<tier>); Group itself is not a resource this hub serves.
            "operation": [{"name": "export", "definition": _BULK + "export",
                           "documentation": _EXPORT_DOC},
                          {"name": "export", "definition": _BULK + "group-export",
                           "documentation": "Group/{id}/$export: id is a registry group or "
                                            "tier-<tier>. " + _EXPORT_DOC}],
        }],
    }
