"""One home reading in: checked, turned into an Observation event, appended durably.

Both device entry paths (MQTT, HTTP ``POST /devices/{id}/readings``) call
:meth:`DeviceIntake.handle`; its contract, in order:

1. The device must be in the registry, active, and bound to a patient (``unknown-device``,
   ``unbound-device``); the payload must be a reading (``bad-reading``) whose values a meter
   can measure (``implausible-value``), and the Observation must pass the validation every
   path shares (``invalid-resource``).
2. The event id is derived from the reading: one the intake accepted before
   (``hub_device_readings``, written after the durable moment) is a duplicate
   (``duplicate-reading``) — unless the transport says it is delivering the same message
   again after a lost acknowledgement, which is then simply acknowledged.
3. The event is signed with the hub's key in the name of the device's facility (the hub
   authenticated the device, as the gateway does a facility's token) and appended to
   ``hie.events.v1``; ``handle`` returns at the durable moment (``publish_durably``).
4. A refusal is committed to ``hub_dead_letters`` (then the dead-letter topic) before
   ``handle`` returns it. ``unavailable`` (broker or journal did not acknowledge in time,
   or the refusal could not be recorded) means nothing is promised: send it again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from hub.deadletters.keeper import DeadLetterKeeper
from hub.deadletters.letter import refuse
from hub.engine.acks import JournalAcks, publish_durably
from hub.engine.writer import dialect_insert
from hub.envelope import SOURCE_PREFIX, Envelope, now_rfc3339
from hub.errors import HubError
from hub.fhir import Issue, validate
from hub.log.producer import Publisher
from hub.monitoring import readings as rd
from hub.monitoring.rules import implausible
from hub.registry.care import CareRegistry
from hub.signing import Signer
from hub.store.db import Store
from hub.store.schema import device_readings

ENTRY = "devices"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # accepted | refused | unavailable
    reason: str = ""  # the dead-letter reason code when refused
    detail: str = ""
    observation: str | None = None  # Observation/<facility>.<id> when accepted
    event_id: str | None = None
    letter: str | None = None  # the dead letter's id when refused


class DeviceIntake:
    def __init__(self, store: Store, publisher: Publisher, topic: str,
                 keeper: DeadLetterKeeper, care: Callable[[], CareRegistry], signer: Signer,
                 acks: JournalAcks | None, ack_timeout_s: float) -> None:
        self.store = store
        self.publisher = publisher
        self.topic = topic
        self.keeper = keeper
        self.care = care
        self.signer = signer
        self.acks = acks
        self.ack_timeout_s = ack_timeout_s
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def handle(self, device_id: str, raw: bytes, transport: str,
                     redelivery: bool = False) -> Outcome:
        device = self.care().device(device_id)
        facility = device.facility if device else None
        if device is None:
            return await self._refuse(device_id, raw, transport, "unknown-device",
                                      f"no device {device_id!r} is registered", None, None)
        if device.patient is None:
            return await self._refuse(device_id, raw, transport, "unbound-device",
                                      f"device {device_id} is not bound to a patient",
                                      facility, None)
        try:
            doc = rd.parse_payload(raw)
            kind_values = rd.values(device.kind, doc)
            obs = rd.observation(device.kind, device_id, device.local_patient or "", doc)
        except rd.BadReading as exc:
            return await self._refuse(device_id, raw, transport, "bad-reading", str(exc),
                                      facility, device.patient)
        if why := implausible(kind_values):
            return await self._refuse(device_id, raw, transport, "implausible-value", why,
                                      facility, device.patient)
        if issues := validate(obs, "Observation"):
            return await self._refuse(device_id, raw, transport, "invalid-resource",
                                      issues[0].diagnostics, facility, device.patient,
                                      issues)
        event_id = rd.event_id(device_id, obs)
        subject = f"Observation/{facility}.{obs['id']}"
        try:
            if await asyncio.to_thread(_seen, self.store, event_id):
                if redelivery:  # ours, acknowledged before the transport's ack was lost
                    self._count("redelivered")
                    return Outcome("accepted", observation=subject, event_id=event_id)
                return await self._refuse(device_id, raw, transport, "duplicate-reading",
                                          f"this reading is already in the record as "
                                          f"{subject}", facility, device.patient)
            env = self.signer.sign(Envelope(
                id=event_id, source=f"{SOURCE_PREFIX}{facility}",
                type="fhir.Observation.upsert.v1", subject=f"Observation/{obs['id']}",
                time=now_rfc3339(), key=device.patient, data=orjson.dumps(obs)))
            await publish_durably(self.publisher, self.topic, [env], self.acks,
                                  self.ack_timeout_s)
            await asyncio.to_thread(_accepted, self.store, event_id, device_id)
        except HubError as exc:
            self._count("unavailable")
            return Outcome("unavailable", detail=str(exc))
        self._count("accepted")
        return Outcome("accepted", observation=subject, event_id=event_id)

    async def _refuse(self, device_id: str, raw: bytes, transport: str, reason: str,
                      detail: str, facility: str | None, patient: str | None,
                      issues: list[Issue] | None = None) -> Outcome:
        letter = refuse(
            ENTRY, reason, raw, issues=issues or [Issue("(reading)", detail)], detail=detail,
            # The same bytes from the same device refused again are one letter.
            natural_key=(ENTRY, device_id, hashlib.sha256(raw).hexdigest()),
            facility=facility, resource_type="Observation", patient_key=patient,
            key=device_id.encode(), headers=[("device", device_id.encode()),
                                             ("transport", transport.encode()),
                                             ("content-type", b"application/json")])
        try:
            await self.keeper.keep([letter])
        except HubError as exc:
            self._count("unavailable")
            return Outcome("unavailable", detail=f"the refusal could not be recorded: {exc}")
        self._count(reason)
        return Outcome("refused", reason, detail, letter=letter.id)


def _seen(store: Store, event_id: str) -> bool:
    with store.connect() as conn:
        return conn.execute(sa.select(device_readings.c.event_id).where(
            device_readings.c.event_id == event_id)).first() is not None


def _accepted(store: Store, event_id: str, device_id: str) -> None:
    with store.begin() as conn:
        conn.execute(dialect_insert(conn, device_readings).on_conflict_do_nothing(
            index_elements=["event_id"]), [{"event_id": event_id, "device_id": device_id,
                                            "accepted_at": now_rfc3339()}])
