"""From an HL7 v2 message to signed events on ``hie.inbound.v1``, with an acknowledgement.

Runs where the facility's signing key is (at the facility, or at the hub on its behalf):
the events it publishes are the facility's own, verified and validated again by the hub's
ingest stage. A message that cannot be mapped or whose resources break FHIR or consortium
rules is answered ``AE``/``AR`` with the reason and dead-lettered byte for byte. ``AA`` means
every event of the message is kept: with ``receipts`` (durable acknowledgement, the default
with the bundled broker) the hub's receipts say its SQL journal committed each one; without,
the broker acknowledged them (acks=all, enough on a replicated Apache Kafka).

Before publishing, every resource about a patient is claimed for that patient in the store
(``hub.record.owners``): a message that would file a result, report or specimen under an id
already belonging to another patient is refused ``AE``, naming the ids, and nothing of it is
published. Every listener and import of a facility must use the same store (the hub's, as
``hub mllp`` and ``hub hl7-import`` do by default) for the claims to see each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import tzinfo

from adapters.hl7v2.codec import ack, decode
from adapters.hl7v2.mapping import Hl7Refused, map_message
from adapters.sdk import build_envelope
from hub import clock
from hub.clock import CONSORTIUM_TZ
from hub.config import Settings
from hub.deadletters import refuse
from hub.engine.receipts import ReceiptWaiter
from hub.errors import HubError
from hub.fhir import Issue, patient_key, validate
from hub.log.producer import Publisher
from hub.record.owners import Claim, Conflict, claim_patients
from hub.record.rules import hub_id
from hub.signing import Signer
from hub.store.db import Store


@dataclass
class IntakeStats:
    accepted: int = 0
    refused: int = 0
    events: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Hl7Intake:
    def __init__(self, settings: Settings, facility: str, signer: Signer,
                 publisher: Publisher, store: Store, receipts: ReceiptWaiter | None = None,
                 tz: tzinfo = CONSORTIUM_TZ, senders: tuple[str, ...] = ()) -> None:
        """``store``: where results are claimed for their patients (the hub's);
        ``tz``: the facility's zone (registry), for times sent without an offset;
        ``senders``: the names its systems put in MSH-4 besides its id (registry)."""
        self.settings = settings
        self.receipts = receipts
        self.facility = facility
        self.signer = signer
        self.publisher = publisher
        self.store = store
        self.tz = tz
        self.senders = senders
        self.stats = IntakeStats()

    async def handle(self, raw: bytes) -> tuple[bytes, str, str]:
        """(ACK bytes, ACK code, reason) for one message."""
        text, encoding = decode(raw)
        try:
            mapped = map_message(text, self.facility, self.tz, self.senders)
        except Hl7Refused as exc:
            await self._refuse(raw, exc.code, exc.reason, [Issue("(message)", exc.reason)])
            return self._ack(text, exc.code, exc.reason, encoding), exc.code, exc.reason
        issues: list[Issue] = []
        for res in mapped.resources:
            for i in validate(res, res["resourceType"]):
                issues.append(Issue(f"{res['resourceType']}/{res['id']}: {i.location}",
                                    i.diagnostics, i.code))
        if issues:
            reason = "; ".join(f"{i.location}: {i.diagnostics}" for i in issues[:3])
            await self._refuse(raw, "AE", reason, issues)
            return self._ack(text, "AE", reason, encoding), "AE", reason
        try:
            conflicts = await asyncio.to_thread(self._claim, mapped.resources)
        except HubError as exc:  # the store is away: nothing kept, the sender resends
            return self._busy(text, encoding, exc)
        if conflicts:
            reason = self._conflict_reason(conflicts)
            await self._refuse(raw, "AE", reason, [Issue(
                f"{c.claim.resource_type}/{c.claim.id}", f"belongs to patient {c.owner}",
                "conflict") for c in conflicts])
            return self._ack(text, "AE", reason, encoding), "AE", reason
        envs = [build_envelope(self.signer, r) for r in mapped.resources]
        ids = [e.id for e in envs]
        if self.receipts is not None:
            self.receipts.expect(ids)  # before publishing: a receipt may come at once
        try:
            await self.publisher.publish(self.settings.topics.inbound, envs)
        except HubError as exc:  # the broker is away: nothing kept, the sender resends
            if self.receipts is not None:
                self.receipts.forget(ids)
            return self._busy(text, encoding, exc)
        if self.receipts is not None:
            refused = await self.receipts.wait(ids, self.settings.ack_timeout_s)
            if refused is None:
                reason = (f"the hub did not confirm within {self.settings.ack_timeout_s:g} s "
                          "that it kept the message; send it again")
                return self._ack(text, "AE", reason, encoding), "AE", reason
            if refused:
                reason = f"the hub refused it: {next(iter(refused.values()))}"[:400]
                self._count_refusal(reason)
                return self._ack(text, "AE", reason, encoding), "AE", reason
        self.stats.accepted += 1
        self.stats.events += len(envs)
        return self._ack(text, "AA", "", encoding), "AA", ""

    def _ack(self, text: str, code: str, reason: str, encoding: str) -> bytes:
        return ack(text, code, reason, encoding, self.tz)

    def _busy(self, text: str, encoding: str, exc: HubError) -> tuple[bytes, str, str]:
        reason = f"the hub cannot take the message now ({exc}); send it again"
        return self._ack(text, "AE", reason, encoding), "AE", reason

    def _claim(self, resources: list[dict]) -> list[Conflict]:
        """Claim each resource about a patient for that patient; the conflicts."""
        claims = []
        for res in resources:
            key = patient_key(self.facility, res)
            if res["resourceType"] != "Patient" and key != self.facility:
                claims.append(Claim(res["resourceType"], hub_id(self.facility, res["id"]), key))
        return claim_patients(self.store, claims)

    def _conflict_reason(self, conflicts: list[Conflict]) -> str:
        """Who owns them first (MSA-3 keeps 200 characters), then which they are."""
        def local(key: str) -> str:
            return key.removeprefix(f"{self.facility}.")

        owners = ", ".join(sorted({local(c.owner) for c in conflicts}))
        named = ", ".join(f"{c.claim.resource_type}/{local(c.claim.id)}"
                          for c in conflicts[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        return (f"these results belong to patient {owners}, not "
                f"{local(conflicts[0].claim.patient_key)}: {named}{more}; a result never "
                "moves to another patient (send it under a new order number)")

    def _count_refusal(self, reason: str) -> None:
        self.stats.refused += 1
        short = reason.split(":")[0][:60]
        self.stats.by_reason[short] = self.stats.by_reason.get(short, 0) + 1

    async def _refuse(self, raw: bytes, code: str, reason: str, issues: list[Issue]) -> None:
        self._count_refusal(reason)
        letter = refuse("hl7v2", code, raw, issues=issues, detail=reason,
                        facility=self.facility, key=self.facility.encode(),
                        headers=[("content-type", b"x-application/hl7-v2+er7"),
                                 ("hl7_facility", self.facility.encode()),
                                 ("hl7_received", clock.now_rfc3339().encode())])
        await self.publisher.publish_raw(self.settings.topics.deadletter, [letter.record()])
