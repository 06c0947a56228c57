"""Turning one submitted resource into a signed envelope, or into the issues that stop it.

Pure apart from the clock and uuid: no Kafka, no HTTP. Both entry paths use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from hub.envelope import Envelope, new_event
from hub.facilities import Facility
from hub.fhir import Issue, patient_key, unstorable_text, validate
from hub.signing import hub_signer


@dataclass(frozen=True, slots=True)
class Prepared:
    """Outcome for one resource: an envelope to append, or issues to report and dead-letter.

    ``kept`` names the resource a conditional create found already there (``Patient/x``):
    nothing to append, and not a refusal either.
    """

    envelope: Envelope | None
    issues: list[Issue]
    resource: dict[str, Any] | None = None
    kept: str | None = None

    @property
    def ok(self) -> bool:
        return self.envelope is not None or self.kept is not None


def local_id(facility: Facility, value: str) -> str:
    """Accept a facility's own hub id (``<facility>.<id>``) where its local id is expected."""
    return value.removeprefix(f"{facility.id}.")


def foreign_owner(facility_id: str, rid: str, members: Container[str]) -> str | None:
    """The other member whose hub id ``rid`` is, if it is one (``township-2.obs-1`` sent by
    township-1); None for the facility's own ids.

    The shared record would keep such a resource as ``township-1.township-2.obs-1``, not
    under the id the facility named, so it is refused: nobody writes another facility's
    resource.
    """
    owner, dot, _ = rid.partition(".")
    return owner if dot and owner != facility_id and owner in members else None


def foreign_id_issue(facility: Facility, rtype: str, rid: str, members: Container[str]
                     ) -> Issue | None:
    owner = foreign_owner(facility.id, rid, members)
    if owner is None:
        return None
    return Issue(f"{rtype}.id", f"{rid!r} is {owner}'s resource (its hub id): {facility.id} "
                 f"may write only its own resources, under its own ids", "forbidden")


def prepare_upsert(
    facility: Facility,
    resource: Any,
    expected_type: str | None = None,
    url_id: str | None = None,
    assign_id: bool = False,
    raw: bytes | None = None,
    members: Container[str] = (),
    exact: Any = None,
    references: Mapping[str, str] | None = None,
    sign: bool = True,
    validated: list[Issue] | None = None,
) -> Prepared:
    """Validate ``resource`` from ``facility`` and wrap it in an upsert envelope signed by
    the hub (which authenticated the facility); ``sign=False`` leaves the signing to the
    caller, which signs a whole Bundle's envelopes under one manifest.

    ``url_id`` is the id a PUT names (it must match the body's); ``assign_id`` lets a POST
    without an id get a fresh one, as a FHIR server does on create. ``raw`` is the JSON the
    resource was parsed from (it spares the text check a walk); ``members`` the consortium's
    facility ids, so that an id naming another member's resource is refused.

    What is appended is the resource as sent: ``exact`` is the same resource parsed with its
    numbers kept as written (``hub.exactjson``; ``resource`` itself when None), and the only
    changes are the id (assigned, or a facility's own hub id made local) and the references
    ``references`` maps (a transaction's ``urn:uuid:`` fullUrls to the ids they got).
    ``validated``: the resource's issues, when the caller validated a batch at once
    (``hub.fhir.validate_many``).
    """
    issues = validate(resource, expected_type, raw) if validated is None else validated
    if issues:
        return Prepared(None, issues)
    res = dict(resource if exact is None else exact)
    rtype = res["resourceType"]
    if url_id is not None:
        if found := unstorable_text(url_id, f"{rtype}.id"):  # a Bundle's request.url
            return Prepared(None, found)
        url_id = local_id(facility, url_id)
        body_id = res.get("id")
        if body_id is not None and local_id(facility, body_id) != url_id:
            return Prepared(None, [Issue(f"{res['resourceType']}.id",
                                         f"id {body_id!r} does not match the URL id {url_id!r}")])
        res["id"] = url_id
    elif res.get("id"):
        res["id"] = local_id(facility, res["id"])
    elif assign_id:
        res["id"] = str(uuid.uuid4())
    else:
        return Prepared(None, [Issue(f"{res['resourceType']}.id",
                                     "id is required (use POST to have one assigned)",
                                     code="required")])
    if foreign := foreign_id_issue(facility, rtype, res["id"], members):
        return Prepared(None, [foreign])
    if references:
        res = rewrite_references(res, references)
    # meta.lastUpdated is left as sent: the hub does not stamp its arrival time into the
    # resource, where it would outrank the sender's own version order (hub.record.rules).
    key = patient_key(facility.id, res, members)
    env = new_event(facility.id, res["resourceType"], res["id"], key, orjson.dumps(res))
    return Prepared(hub_signer().sign(env) if sign else env, [], res)


def rewrite_references(value: Any, references: Mapping[str, str]) -> Any:
    """``value`` with every ``reference`` that ``references`` maps replaced (a copy)."""
    if isinstance(value, dict):
        out = {k: rewrite_references(v, references) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in references:
            out["reference"] = references[ref]
        return out
    if isinstance(value, list):
        return [rewrite_references(v, references) for v in value]
    return value


def prepare_delete(facility: Facility, resource_type: str, rid: str, key: str,
                   version: str | None = None) -> Envelope:
    """A delete event; ``version``, the versionId of the version it deletes, lets the
    record order the deletion among versions numbered by the facility."""
    local = local_id(facility, rid)  # rid may be the facility's hub id or its own
    data = b"" if version is None else orjson.dumps(
        {"resourceType": resource_type, "id": local, "meta": {"versionId": version}})
    env = new_event(facility.id, resource_type, local, key, data, action="delete")
    return hub_signer().sign(env)
