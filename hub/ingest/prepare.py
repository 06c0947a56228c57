"""Turning one submitted resource into a signed envelope, or into the issues that stop it.

Pure apart from the clock and uuid: no Kafka, no HTTP. Both entry paths use it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from hub.envelope import Envelope, new_event, now_rfc3339
from hub.facilities import Facility
from hub.fhir import Issue, patient_key, validate
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


def prepare_upsert(
    facility: Facility,
    resource: Any,
    expected_type: str | None = None,
    url_id: str | None = None,
    assign_id: bool = False,
) -> Prepared:
    """Validate ``resource`` from ``facility`` and wrap it in an upsert envelope signed by
    the hub (which authenticated the facility).

    ``url_id`` is the id a PUT names (it must match the body's); ``assign_id`` lets a POST
    without an id get a fresh one, as a FHIR server does on create.
    """
    issues = validate(resource, expected_type)
    if issues:
        return Prepared(None, issues)
    res = dict(resource)
    if url_id is not None:
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
    meta = dict(res.get("meta") or {})
    if not meta.get("lastUpdated"):
        # A FHIR server stamps lastUpdated; the shared record orders versions by it.
        meta["lastUpdated"] = now_rfc3339()
        res["meta"] = meta
    key = patient_key(facility.id, res)
    env = new_event(facility.id, res["resourceType"], res["id"], key, orjson.dumps(res))
    return Prepared(hub_signer().sign(env), [], res)


def prepare_delete(facility: Facility, resource_type: str, rid: str, key: str) -> Envelope:
    env = new_event(facility.id, resource_type, local_id(facility, rid), key, b"",
                    action="delete")  # rid may be the facility's hub id or its own
    return hub_signer().sign(env)
