"""The checks a record on ``hie.inbound.v1`` must pass before it may enter the log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from hub.collector import paused
from hub.envelope import Envelope
from hub.errors import AuthError, EnvelopeError
from hub.facilities import FacilityDirectory
from hub.fhir import Issue, parse_json, patient_key, validate_many
from hub.ingest.prepare import foreign_owner


class Verdict(NamedTuple):
    """``facility`` set when the record may enter the log; else ``reason`` and ``issues``.
    ``event_id`` is set whenever the envelope could be read (the stage checks replays)."""

    facility: str | None
    reason: str = ""
    issues: tuple[Issue, ...] = ()
    event_id: str = ""


InboundRecord = tuple[Any, bytes | None, bytes | None, int | None]
"""One record of ``hie.inbound.v1`` as the checks take it: headers, key, value, and its
Kafka timestamp in milliseconds."""


def check_inbound(directory: FacilityDirectory, headers, key: bytes | None,
                  value: bytes | None, timestamp_ms: int | None = None) -> Verdict:
    """``timestamp_ms`` is the inbound record's Kafka timestamp (when it was published)."""
    return check_inbound_many(directory, [(headers, key, value, timestamp_ms)])[0]


def check_inbound_many(directory: FacilityDirectory,
                       records: Sequence[InboundRecord]) -> list[Verdict]:
    """``check_inbound`` for a batch of (headers, key, value, timestamp_ms): each record's
    verdict, the same as one at a time, found step by step across the batch (reading,
    signatures, JSON, validation in one loop: ``hub.fhir.validate_many``), with the
    collector paused meanwhile (``hub.collector``)."""
    with paused():
        return _check_batch(directory, records)


def _check_batch(directory: FacilityDirectory,
                 records: Sequence[InboundRecord]) -> list[Verdict]:
    verdicts: list[Verdict | None] = [None] * len(records)
    envs: dict[int, Envelope] = {}
    for i, (headers, key, value, _) in enumerate(records):
        try:
            envs[i] = Envelope.from_record(headers, key, value)
        except EnvelopeError as exc:
            verdicts[i] = Verdict(None, "bad-envelope", (Issue("(headers)", str(exc),
                                                                 "structure"),))
    parsed: dict[int, Any] = {}
    for i, env in envs.items():
        timestamp_ms = records[i][3]
        try:
            at = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None
            directory.verify(env, at=at)
        except AuthError as exc:
            verdicts[i] = Verdict(None, exc.reason, (Issue("ce_signature", str(exc),
                                                           "security"),), env.id)
            continue
        if owner := foreign_owner(env.facility_id, env.resource_id, directory):
            verdicts[i] = Verdict(None, "foreign-id", (Issue(
                f"{env.resource_type}.id", f"{env.resource_id!r} is {owner}'s resource (its "
                f"hub id): nobody writes another facility's resource", "forbidden"),), env.id)
        elif env.action == "delete":
            verdicts[i] = Verdict(env.facility_id, event_id=env.id)
        else:
            resource, issues = parse_json(env.data)
            if issues:
                verdicts[i] = Verdict(None, "invalid-json", tuple(issues), env.id)
            else:
                parsed[i] = resource
    at = list(parsed)
    found = validate_many([parsed[i] for i in at], [envs[i].resource_type for i in at],
                          [envs[i].data for i in at])
    for i, issues in zip(at, found, strict=True):
        verdicts[i] = _judge(envs[i], parsed[i], issues, directory)._replace(
            event_id=envs[i].id)
    return verdicts  # type: ignore[return-value]


def _judge(env: Envelope, resource: Any, issues: list[Issue], directory: FacilityDirectory
           ) -> Verdict:
    if issues:
        return Verdict(None, "invalid-resource", tuple(issues))
    if resource.get("id") != env.resource_id:
        return Verdict(None, "subject-mismatch", (Issue(
            f"{env.resource_type}.id", f"resource id {resource.get('id')!r} does not match "
            f"ce_subject {env.subject!r}"),))
    expected_key = patient_key(env.facility_id, resource, directory)
    # A publisher that does not know the members keys a reference to another member's
    # patient under its own prefix, as the hub did before it knew hub ids: still in order.
    if env.key != expected_key and env.key != patient_key(env.facility_id, resource):
        return Verdict(None, "key-mismatch", (Issue(
            "(key)", f"Kafka key must be the patient key {expected_key!r}, got {env.key!r}"),))
    return Verdict(env.facility_id)
