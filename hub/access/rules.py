"""Pure access rules: principals, scopes, and the AuditEvent a read leaves behind."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass

ALL = "*"
# Not a projection: the scope of /metrics, whose counts name every facility.
METRICS_SCOPE = "metrics"
_AUDIT_PREFIX = uuid.uuid4().hex[:12]
_AUDIT_COUNTER = itertools.count()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated reader: a member facility, or a registered downstream app.

    ``facilities`` are the facilities whose patients it may read (``*`` for all);
    ``projections`` the projections it may query (``*`` for all).
    """

    kind: str  # "facility" or "app"
    id: str
    facilities: frozenset[str]
    projections: frozenset[str]

    @property
    def system(self) -> str:
        return f"urn:hie:{self.kind}"


def patient_facility(patient_key: str) -> str:
    """The facility a patient key belongs to (``township-1.p-7`` -> ``township-1``)."""
    return patient_key.partition(".")[0]


def may_read_projection(p: Principal, projection: str) -> bool:
    return ALL in p.projections or projection in p.projections


def may_read_patient(p: Principal, patient_key: str) -> bool:
    return ALL in p.facilities or patient_facility(patient_key) in p.facilities


def may_read_metrics(p: Principal) -> bool:
    """Only an app given the ``metrics`` scope (a monitoring system) or every scope: the
    per-facility counts are the consortium's, not any one member's to see."""
    return p.kind == "app" and may_read_projection(p, METRICS_SCOPE)


def readable_facilities(p: Principal) -> frozenset[str] | None:
    """None when unrestricted, else the facilities whose patients ``p`` may see."""
    return None if ALL in p.facilities else p.facilities


DEADLETTERS = "deadletters"
EXPORT = "export"  # bulk export of identified records
RESEARCH = "research"  # bulk export, de-identified only


def may_export(p: Principal, deidentified: bool) -> bool:
    """Bulk export is named explicitly (``*`` does not include it: it is every record at
    once). A member facility exports its own patients; an app needs ``export``, or
    ``research`` for a de-identified export."""
    if p.kind == "facility":
        return True
    return EXPORT in p.projections or (deidentified and RESEARCH in p.projections)


def export_facilities(p: Principal) -> frozenset[str] | None:
    """Whose records an export of ``p`` holds: a facility's own; an app's readable ones."""
    return frozenset({p.id}) if p.kind == "facility" else readable_facilities(p)


def dead_letter_facilities(p: Principal) -> frozenset[str] | None:
    """Whose dead letters ``p`` may read: None for everyone's, else those facilities'.

    A member facility sees what it sent (or what was sent in its name). An app sees dead
    letters only if its entry names the ``deadletters`` scope explicitly (a consortium
    operator's console; ``*`` does not include it, as dead letters hold raw input), and
    then those of the facilities it may read.
    """
    if p.kind == "facility":
        return frozenset({p.id})
    if DEADLETTERS not in p.projections:
        return frozenset()
    return readable_facilities(p)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One access to one patient's data, as the hub records it."""

    id: str
    recorded: str
    agent_kind: str
    agent_id: str
    interaction: str  # read | search-type
    what: str  # e.g. Observation/township-1.o7, or the search
    patient_key: str
    outcome: str  # 0 success, 4 refused


UNAUTHENTICATED = "unauthenticated"
_INTERACTIONS = {"PUT": "update", "DELETE": "delete", "PATCH": "patch"}


def refused_credential(method: str, path: str, query: str, token: str | None,
                       patient_key: str, recorded: str) -> AuditRecord:
    """The audit record of a request refused with 401 (no or unknown credential).

    The agent is ``anonymous``, or the presented token's SHA-256 prefix: repeated attempts
    with one token can be told apart and correlated, and the secret itself (perhaps a real
    token one character off) is never stored. ``patient_key`` is the patient the request
    named, if any, so the attempt shows in that patient's trail.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["fhir"]:
        parts = parts[1:]
    if method == "GET":
        interaction = "read" if len(parts) >= 2 else "search-type"
    elif method == "POST":
        interaction = "create" if len(parts) == 1 else (
            "transaction" if not parts else "operation")
    else:
        interaction = _INTERACTIONS.get(method, "operation")
    what = "/".join(parts) + (f"?{query}" if query else "")
    agent = (f"token-sha256:{hashlib.sha256(token.encode()).hexdigest()[:12]}" if token
             else "anonymous")
    return AuditRecord(audit_id(), recorded, UNAUTHENTICATED, agent, interaction,
                       what[:2000], patient_key, "4")


def audit_id() -> str:
    return f"{_AUDIT_PREFIX}-{next(_AUDIT_COUNTER):x}"


def audit_event(r: AuditRecord) -> dict:
    """The FHIR R4B AuditEvent for an access record."""
    entity = [{"what": {"reference": f"Patient/{r.patient_key}"},
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                        "code": "1", "display": "Person"},
               "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                        "code": "1", "display": "Patient"}}]
    if r.what.count("/") == 1 and "?" not in r.what:
        entity.append({"what": {"reference": r.what}})
    else:
        entity.append({"query": _b64(r.what), "description": r.what})
    out = {
        "resourceType": "AuditEvent",
        "id": r.id,
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110",
                 "display": "Patient Record"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction",
                     "code": r.interaction}],
        "action": "R" if r.interaction == "read" else "E",
        "recorded": r.recorded,
        "outcome": r.outcome,
        "agent": [{"who": {"identifier": {"system": f"urn:hie:{r.agent_kind}",
                                          "value": r.agent_id}},
                   "requestor": True}],
        "source": {"observer": {"display": "hie-hub"}},
        "entity": entity,
    }
    # A refusal by a patient's consent names the consent in the record's ``what``.
    consent = r.what.rpartition(" [consent ")[2] if " [consent " in r.what else ""
    if r.outcome == "4" and consent.endswith("]"):
        out["outcomeDesc"] = f"refused: a consent rule applied ({consent[:-1]})"
    return out


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
