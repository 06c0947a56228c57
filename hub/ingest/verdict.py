"""The checks a record on ``hie.inbound.v1`` must pass before it may enter the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from hub.envelope import Envelope
from hub.errors import AuthError, EnvelopeError
from hub.facilities import FacilityDirectory
from hub.fhir import Issue, parse_json, patient_key, validate
from hub.ingest.prepare import foreign_owner


class Verdict(NamedTuple):
    """``facility`` set when the record may enter the log; else ``reason`` and ``issues``.
    ``event_id`` is set whenever the envelope could be read (the stage checks replays)."""

    facility: str | None
    reason: str = ""
    issues: tuple[Issue, ...] = ()
    event_id: str = ""


def check_inbound(directory: FacilityDirectory, headers, key: bytes | None,
                  value: bytes | None, timestamp_ms: int | None = None) -> Verdict:
    """``timestamp_ms`` is the inbound record's Kafka timestamp (when it was published)."""
    try:
        env = Envelope.from_record(headers, key, value)
    except EnvelopeError as exc:
        return Verdict(None, "bad-envelope", (Issue("(headers)", str(exc), "structure"),))
    try:
        at = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None
        directory.verify(env, at=at)
    except AuthError as exc:
        return Verdict(None, exc.reason, (Issue("ce_signature", str(exc), "security"),),
                       env.id)
    verdict = _check_resource(env, directory)
    return verdict._replace(event_id=env.id)


def _check_resource(env: Envelope, directory: FacilityDirectory) -> Verdict:
    if owner := foreign_owner(env.facility_id, env.resource_id, directory):
        return Verdict(None, "foreign-id", (Issue(
            f"{env.resource_type}.id", f"{env.resource_id!r} is {owner}'s resource (its hub "
            f"id): nobody writes another facility's resource", "forbidden"),))
    if env.action == "delete":
        return Verdict(env.facility_id)
    resource, issues = parse_json(env.data)
    if issues:
        return Verdict(None, "invalid-json", tuple(issues))
    issues = validate(resource, env.resource_type, env.data)
    if issues:
        return Verdict(None, "invalid-resource", tuple(issues))
    if resource.get("id") != env.resource_id:
        return Verdict(None, "subject-mismatch", (Issue(
            f"{env.resource_type}.id", f"resource id {resource.get('id')!r} does not match "
            f"ce_subject {env.subject!r}"),))
    expected_key = patient_key(env.facility_id, resource, directory)
    # A publisher that does not know the members keys a reference to another member's
    # patient under its own prefix, as the hub did before it knew hub ids: still in order.
    if env.key not in (expected_key, patient_key(env.facility_id, resource)):
        return Verdict(None, "key-mismatch", (Issue(
            "(key)", f"Kafka key must be the patient key {expected_key!r}, got {env.key!r}"),))
    return Verdict(env.facility_id)
