"""Family-doctor teams, their signed residents, and home devices with their binding. Pure.

The consortium file lists them (``teams:``, ``devices:``); the hub publishes each as a FHIR
resource, as it does Organizations, so the monitoring projection folds them from the log and a
rebuild sees who was signed to which team, and which meter measured whom, when:

* a team -> ``CareTeam`` (``managingOrganization`` its facility, the county specialist's
  facility as a participant: where escalations go);
* a signed resident -> ``EpisodeOfCare`` (patient, the team, conditions under monitoring;
  ``finished`` when the resident leaves the team), keyed by the patient key so it keeps its
  order with the resident's readings;
* a device -> ``Device`` (owner the facility; ``patient`` is the binding; ``inactive`` when
  it leaves the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.monitoring.rules import KINDS

CONDITIONS = ("hypertension", "diabetes")
TEAM_SYSTEM = "urn:hie:family-doctor-team"
DEVICE_SYSTEM = "urn:hie:device"
CONDITION_SYSTEM = "urn:hie:monitoring:condition"
KIND_SYSTEM = "urn:hie:monitoring:device-kind"
SPECIALIST_ROLE = "escalation-specialist"


@dataclass(frozen=True, slots=True)
class Resident:
    patient: str  # patient key: <facility>.<local id>
    signed: date
    conditions: tuple[str, ...] = ("hypertension",)

    @property
    def diabetic(self) -> bool:
        return "diabetes" in self.conditions


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    facility: str
    specialist: str  # the county (or city) facility escalations go to
    residents: tuple[Resident, ...] = ()


@dataclass(frozen=True, slots=True)
class Device:
    id: str  # unique in the consortium: the MQTT topic names it
    kind: str  # bp | glucose
    facility: str
    patient: str | None = None  # the binding: a patient key at ``facility``, None = unbound
    model: str | None = None

    @property
    def local_patient(self) -> str | None:
        return self.patient.split(".", 1)[1] if self.patient else None


@dataclass(frozen=True)
class CareRegistry:
    """Teams and devices as the consortium file states them now."""

    teams: tuple[Team, ...] = ()
    devices: tuple[Device, ...] = ()

    def device(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    @property
    def _devices(self) -> dict[str, Device]:
        cache = self.__dict__.get("_by_id")
        if cache is None:
            cache = {d.id: d for d in self.devices}
            object.__setattr__(self, "_by_id", cache)
        return cache

    def team(self, team_id: str) -> Team | None:
        return next((t for t in self.teams if t.id == team_id), None)

    def team_of(self, patient: str) -> tuple[Team, Resident] | None:
        for t in self.teams:
            for r in t.residents:
                if r.patient == patient:
                    return t, r
        return None


def problems(care: CareRegistry, facilities: set[str]) -> list[str]:
    """What makes the teams and devices inconsistent with each other and the facilities."""
    out: list[str] = []
    for kind, ids in (("team", [t.id for t in care.teams]),
                      ("device", [d.id for d in care.devices])):
        if len(set(ids)) != len(ids):
            out.append(f"{kind} ids must be unique")
    signed: dict[str, str] = {}
    for t in care.teams:
        for who, fac in (("facility", t.facility), ("specialist", t.specialist)):
            if fac not in facilities:
                out.append(f"team {t.id}: unknown {who} {fac!r}")
        for r in t.residents:
            if r.patient in signed:
                out.append(f"resident {r.patient} is signed to {signed[r.patient]} and "
                           f"{t.id}: one family-doctor team per resident")
            signed[r.patient] = t.id
            if "." not in r.patient:
                out.append(f"team {t.id}: resident {r.patient!r} is not a patient key "
                           f"(<facility>.<id>)")
    for d in care.devices:
        if d.facility not in facilities:
            out.append(f"device {d.id}: unknown facility {d.facility!r}")
        if d.kind not in KINDS:
            out.append(f"device {d.id}: kind must be one of {', '.join(KINDS)}")
        if d.patient and not d.patient.startswith(f"{d.facility}."):
            out.append(f"device {d.id}: bound to {d.patient}, not a patient of its facility "
                       f"{d.facility}")
    return out


def parse(doc: dict[str, Any]) -> CareRegistry:
    teams = tuple(Team(
        t["id"], t["name"], t["facility"], t["specialist"],
        tuple(Resident(r["patient"], date.fromisoformat(str(r["signed"])),
                       tuple(r.get("conditions") or ("hypertension",)))
              for r in t.get("residents") or ()))
        for t in doc.get("teams") or ())
    devices = tuple(Device(d["id"], d["kind"], d["facility"], d.get("patient"),
                           d.get("model")) for d in doc.get("devices") or ())
    return CareRegistry(teams, devices)


def to_document(care: CareRegistry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if care.teams:
        out["teams"] = [{"id": t.id, "name": t.name, "facility": t.facility,
                         "specialist": t.specialist,
                         "residents": [{"patient": r.patient, "signed": r.signed.isoformat(),
                                        "conditions": list(r.conditions)}
                                       for r in t.residents]} for t in care.teams]
    if care.devices:
        out["devices"] = [{k: v for k, v in {
            "id": d.id, "kind": d.kind, "facility": d.facility, "patient": d.patient,
            "model": d.model}.items() if v} for d in care.devices]
    return out


# --- FHIR forms ---------------------------------------------------------------------------

def care_team(t: Team, active: bool = True) -> dict:
    return {"resourceType": "CareTeam", "id": t.id,
            "identifier": [{"system": TEAM_SYSTEM, "value": t.id}],
            "status": "active" if active else "inactive", "name": t.name,
            "managingOrganization": [{"reference": f"Organization/{t.facility}"}],
            "participant": [{"role": [{"coding": [{"system": TEAM_SYSTEM,
                                                   "code": SPECIALIST_ROLE}]}],
                             "member": {"reference": f"Organization/{t.specialist}"}}]}


def episode_id(team: str, patient: str) -> str:
    return f"{team}.{patient}"


def episode(t: Team, r: Resident, active: bool = True) -> dict:
    return {"resourceType": "EpisodeOfCare", "id": episode_id(t.id, r.patient),
            "status": "active" if active else "finished",
            "type": [{"coding": [{"system": CONDITION_SYSTEM, "code": c}]}
                     for c in r.conditions],
            "patient": {"reference": f"Patient/{r.patient}"},
            "managingOrganization": {"reference": f"Organization/{t.facility}"},
            "team": [{"reference": f"CareTeam/{t.id}"}],
            "period": {"start": r.signed.isoformat()}}


def device(d: Device, active: bool = True) -> dict:
    out: dict[str, Any] = {
        "resourceType": "Device", "id": d.id,
        "identifier": [{"system": DEVICE_SYSTEM, "value": d.id}],
        "status": "active" if active else "inactive",
        "type": {"coding": [{"system": KIND_SYSTEM, "code": d.kind}]},
        "owner": {"reference": f"Organization/{d.facility}"}}
    if d.patient:
        out["patient"] = {"reference": f"Patient/{d.patient}"}
    if d.model:
        out["modelNumber"] = d.model
    return out


def resources(care: CareRegistry) -> dict[str, tuple[str, dict]]:
    """Every resource the registry publishes for ``care``: sync id -> (Kafka key, resource)."""
    out: dict[str, tuple[str, dict]] = {}
    for t in care.teams:
        out[f"CareTeam/{t.id}"] = (f"registry.team.{t.id}", care_team(t))
        for r in t.residents:
            out[f"EpisodeOfCare/{episode_id(t.id, r.patient)}"] = (r.patient, episode(t, r))
    for d in care.devices:
        out[f"Device/{d.id}"] = (d.patient or f"registry.device.{d.id}", device(d))
    return out


def retired(sync_id: str) -> tuple[str, dict] | None:
    """The resource saying an entry left the file (inactive, finished): only its id and what
    FHIR requires, rebuilt from the sync id."""
    rtype, _, rid = sync_id.partition("/")
    if rtype == "CareTeam":
        return f"registry.team.{rid}", {"resourceType": "CareTeam", "id": rid,
                                        "status": "inactive"}
    if rtype == "Device":
        return f"registry.device.{rid}", {"resourceType": "Device", "id": rid,
                                          "status": "inactive"}
    if rtype == "EpisodeOfCare":
        team, _, patient = rid.partition(".")
        return patient, {"resourceType": "EpisodeOfCare", "id": rid, "status": "finished",
                         "patient": {"reference": f"Patient/{patient}"},
                         "team": [{"reference": f"CareTeam/{team}"}]}
    return None
