"""The ingest stage: ``hie.inbound.v1`` -> verify and validate -> ``hie.events.v1``.

Facilities that publish straight to Kafka write signed envelopes to the inbound topic; only
what passes the same checks as the HTTP gateway is appended to the events topic, the rest is
dead-lettered with an OperationOutcome. Per batch, in order: check every record, publish the
valid ones and the dead letters and wait for the broker's acks, then commit the inbound
offsets. A crash before that commit re-reads the batch and appends some events twice, with
the same event ids, which every consumer of the log skips (exactly-once effect).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer

from hub.config import Settings
from hub.engine.deadletter import Record, dead_letter
from hub.engine.faults import crashpoint
from hub.envelope import Envelope
from hub.errors import AuthError, EnvelopeError
from hub.facilities import FacilityDirectory
from hub.fhir import Issue, operation_outcome, parse_json, patient_key, validate
from hub.log.producer import Publisher
from hub.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    accepted: int = 0
    rejected: int = 0
    first_batch_at: float = 0.0  # perf_counter() when work began and last ended: the
    last_batch_at: float = 0.0   # benchmark's busy window, free of group-join waits


def check_inbound(directory: FacilityDirectory, headers, key: bytes | None, value: bytes | None
                  ) -> tuple[Envelope | None, str, list[Issue]]:
    """(envelope, '', []) when the record may enter the log, else (None, reason, issues)."""
    try:
        env = Envelope.from_record(headers, key, value)
    except EnvelopeError as exc:
        return None, "bad-envelope", [Issue("(headers)", str(exc), "structure")]
    try:
        directory.verify(env)
    except AuthError as exc:
        return None, "bad-credential", [Issue("ce_signature", str(exc), "security")]
    if env.action == "delete":
        return env, "", []
    resource, issues = parse_json(env.data)
    if issues:
        return None, "invalid-json", issues
    issues = validate(resource, env.resource_type)
    if issues:
        return None, "invalid-resource", issues
    if resource.get("id") != env.resource_id:
        return None, "subject-mismatch", [Issue(
            f"{env.resource_type}.id", f"resource id {resource.get('id')!r} does not match "
            f"ce_subject {env.subject!r}")]
    expected_key = patient_key(env.facility_id, resource)
    if env.key != expected_key:
        return None, "key-mismatch", [Issue("(key)", f"Kafka key must be the patient key "
                                      f"{expected_key!r}, got {env.key!r}")]
    return env, "", []


class IngestStage:
    def __init__(self, settings: Settings, directory: FacilityDirectory, publisher: Publisher
                 ) -> None:
        self.settings = settings
        self.directory = directory
        self.publisher = publisher
        self.stats = IngestStats()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, until_caught_up: bool = False) -> IngestStats:
        t = self.settings.topics
        consumer = AIOKafkaConsumer(
            t.inbound, bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.group_prefix}.ingest", client_id="hub-ingest",
            enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(500, self.settings.session_timeout_ms // 5))
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200,
                                               max_records=self.settings.batch_max_records)
                if batch:
                    self.stats.first_batch_at = self.stats.first_batch_at or time.perf_counter()
                    await self._handle(batch)
                    crashpoint(self.settings.crash_at, "ingest_before_commit")
                    await consumer.commit()
                    self.stats.last_batch_at = time.perf_counter()
                elif until_caught_up and consumer.assignment():
                    ends = await consumer.end_offsets(list(consumer.assignment()))
                    positions = [await consumer.position(tp) for tp in ends]
                    if all(p >= ends[tp] for tp, p in zip(ends, positions, strict=True)):
                        break
        finally:
            await consumer.stop()
        return self.stats

    async def _handle(self, batch: dict) -> None:
        good: list[Record] = []
        bad: list[Record] = []
        for tp, msgs in batch.items():
            for m in msgs:
                env, reason, issues = check_inbound(self.directory, m.headers, m.key, m.value)
                if env is not None:
                    good.append((m.key, m.value or b"", list(m.headers)))
                    EVENTS_ACCEPTED.labels("inbound", env.facility_id).inc()
                else:
                    bad.append(dead_letter("ingest", f"{reason}: {issues[0].diagnostics}",
                                           m.value or b"", m.key, list(m.headers or ()),
                                           operation_outcome(issues),
                                           (tp.topic, tp.partition, m.offset)))
                    EVENTS_REJECTED.labels("inbound", reason).inc()
        t = self.settings.topics
        await asyncio.gather(self.publisher.publish_raw(t.events, good),
                             self.publisher.publish_raw(t.deadletter, bad))
        self.stats.accepted += len(good)
        self.stats.rejected += len(bad)


def outcome_of(dead: Record) -> dict | None:
    for name, value in dead[2]:
        if name == "hub_error_outcome":
            return orjson.loads(value)
    return None
