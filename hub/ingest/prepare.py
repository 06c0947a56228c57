"""Turning one submitted resource into a signed envelope, or into the issues that stop it.

Pure apart from the clock and uuid: no Kafka, no HTTP. Both entry paths use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson

from hub.envelope import Envelope, new_event, now_rfc3339
from hub.facilities import Facility
from hub.fhir import Issue, patient_key, unstorable_text, validate
from hub.signing import hub_signer


@dataclass(frozen=True, slots=True)
class Prepared:
    """Outcome for one resource: an envelope to append, or issues to report and dead-letter."""

    envelope: Envelope | None
    issues: list[Issue]
    resource: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.envelope is not None


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
) -> Prepared:
    """Validate ``resource`` from ``facility`` and wrap it in an upsert envelope signed by
    the hub (which authenticated the facility).

    ``url_id`` is the id a PUT names (it must match the body's); ``assign_id`` lets a POST
    without an id get a fresh one, as a FHIR server does on create. ``raw`` is the JSON the
    resource was parsed from (it spares the text check a walk); ``members`` the consortium's
    facility ids, so that an id naming another member's resource is refused.
    """
    issues = validate(resource, expected_type, raw)
    if issues:
        return Prepared(None, issues)
    res = dict(resource)
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
    meta = dict(res.get("meta") or {})
    if not meta.get("lastUpdated"):
        # A FHIR server stamps lastUpdated; the shared record orders versions by it.
        meta["lastUpdated"] = now_rfc3339()
        res["meta"] = meta
    key = patient_key(facility.id, res, members)
    env = new_event(facility.id, res["resourceType"], res["id"], key, orjson.dumps(res))
    return Prepared(hub_signer().sign(env), [], res)


def prepare_delete(facility: Facility, resource_type: str, rid: str, key: str) -> Envelope:
    env = new_event(facility.id, resource_type, local_id(facility, rid), key, b"",
                    action="delete")  # rid may be the facility's hub id or its own
    return hub_signer().sign(env)
