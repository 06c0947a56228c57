"""Publishing with kafka-python, the client facility integrators already know.

    from adapters.sdk import FacilityPublisher
    with FacilityPublisher.from_key_file("kafka:9092", "village-3#2", "village-3.pem",
                                         outbox="hie-outbox.db") as pub:
        pub.publish(observation_dict)
        result = pub.flush(30)       # FlushResult: result.pending, result.message

The private key file is what ``hub facility add`` / ``hub facility rotate-key`` wrote; the
key id names it in the registry. Only the facility holds the private key.

Events go to ``hie.inbound.v1``; the hub's ingest stage verifies the signature and validates
before anything reaches the shared log, and dead-letters (with an OperationOutcome) the rest.

With ``outbox=<file>`` every event is signed and committed to a local SQLite outbox
(``adapters.sdk.outbox``) before Kafka sees it, and leaves it only when the hub's receipt
(``hie.receipts.v1``) says the SQL journal committed it, or that the hub refused it
(``FlushResult.refused``, and ``refusals()`` for all of them): a link that is down for hours,
a restart of the facility's process, or a bundled broker that restarts empty loses nothing.
``confirm="broker"`` settles for the broker's acknowledgement instead (enough with Apache
Kafka's replicated log, or with no hub reading). ``publish`` never waits for the network;
``flush(timeout)`` sends what it can, waits for the receipts and says what is still pending.
Without an outbox the publisher hands events straight to kafka-python, as before: ``flush``
means "on the broker", and what is unsent when the process dies is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from adapters.sdk.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, NewRow, Outbox
from adapters.sdk.receipts import RECEIPTS_TOPIC, ReceiptReader
from hub import clock
from hub.engine.faults import crashpoint
from hub.envelope import Envelope, header_value, new_event
from hub.fhir import patient_key
from hub.signing import Signer, key_owner, read_private_key

INBOUND_TOPIC = "hie.inbound.v1"
log = logging.getLogger(__name__)


def build_envelope(signer: Signer, resource: dict[str, Any], action: str = "upsert",
                   facility_id: str | None = None) -> Envelope:
    """An envelope for ``resource`` (which must carry its facility-local ``id``), signed by
    ``signer``; from the key's owner unless ``facility_id`` says otherwise (tests of the
    hub's refusals use that)."""
    return signer.sign(_unsigned(facility_id or key_owner(signer.kid), resource, action))


def build_envelopes(signer: Signer, resources: Iterable[dict[str, Any]],
                    action: str = "upsert") -> list[Envelope]:
    """Envelopes for ``resources``, signed under one manifest (``hub.signing``): one
    Ed25519 signature for the lot, not one per event, and each event still verifies on its
    own. What ``publish_many`` sends."""
    facility_id = key_owner(signer.kid)
    return signer.sign_batch([_unsigned(facility_id, r, action) for r in resources])


def _unsigned(facility_id: str, resource: dict[str, Any], action: str) -> Envelope:
    if not resource.get("id") or not resource.get("resourceType"):
        raise ValueError("the resource needs resourceType and id")
    data = b"" if action == "delete" else orjson.dumps(resource)
    return new_event(facility_id, resource["resourceType"], resource["id"],
                     patient_key(facility_id, resource), data, action=action)


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What ``flush`` achieved: ``pending`` events are still in the outbox (0: every event
    is journaled by the hub, or refused); ``refused``: (event id, reason) the hub refused
    during this flush (kept in the outbox file, see ``FacilityPublisher.refusals``)."""

    pending: int
    sent: int
    message: str
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.pending == 0

    def __str__(self) -> str:
        return self.message


class FacilityPublisher:
    """A kafka-python producer bound to one facility's identity and key.

    ``outbox``: path of the SQLite outbox (see the module docstring); ``outbox_max_rows`` /
    ``outbox_max_bytes`` bound it: a publish beyond them raises ``OutboxFull`` and stores
    nothing, never dropping what is already stored. ``max_block_ms`` caps how long
    kafka-python may block in ``send()`` for metadata when the broker is unreachable;
    ``connect_timeout_ms`` how long one attempt to reach the broker may take. ``producer``
    passes further kafka-python settings through.
    """

    def __init__(self, bootstrap: str, signer: Signer,
                 topic: str = INBOUND_TOPIC, enable_idempotence: bool = False, *,
                 outbox: str | Path | None = None, outbox_max_rows: int = DEFAULT_MAX_ROWS,
                 outbox_max_bytes: int = DEFAULT_MAX_BYTES, max_block_ms: int = 2000,
                 connect_timeout_ms: int = 3000, chunk: int = 500,
                 exit_flush_timeout: float = 30.0, confirm: str = "journal",
                 receipts_topic: str = RECEIPTS_TOPIC, receipt_timeout: float = 60.0,
                 producer: dict[str, Any] | None = None) -> None:
        if confirm not in ("journal", "broker"):
            raise ValueError(f"confirm must be 'journal' or 'broker', not {confirm!r}")
        self.facility_id = key_owner(signer.kid)
        self.bootstrap = bootstrap
        self._signer = signer
        self.topic = topic
        self.exit_flush_timeout = exit_flush_timeout
        self._config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5,
            # The bundled broker refuses the idempotent producer; Apache Kafka takes it.
            enable_idempotence=enable_idempotence,
            client_id=f"facility-{self.facility_id}", max_request_size=16 * 1024 * 1024)
        self._outbox: Outbox | None = None
        self._producer: KafkaProducer | None = None
        if outbox is None:
            self._producer = KafkaProducer(**self._config, **(producer or {}))
            return
        self._config.update(
            max_block_ms=max_block_ms, bootstrap_timeout_ms=connect_timeout_ms,
            # One request per partition at a time: retries cannot reorder a patient's events.
            max_in_flight_requests_per_connection=1,
            request_timeout_ms=10_000, delivery_timeout_ms=30_000, **(producer or {}))
        self._outbox = Outbox(outbox, outbox_max_rows, outbox_max_bytes)
        self.confirm = confirm
        self.receipts_topic = receipts_topic
        self.receipt_timeout = receipt_timeout
        self._receipts: ReceiptReader | None = None
        self._next_check = 0.0    # when to look again for a replaced log or overdue receipts
        self._receipts_error: str | None = None
        self._refused_now: list[tuple[str, str]] = []
        self.journaled = 0        # events the hub's receipts said are journaled, this process
        self._connect_timeout_ms = connect_timeout_ms
        self._chunk = chunk
        self._consumer: KafkaConsumer | None = None
        self._lock = threading.RLock()
        self._inflight: list[tuple[int, Any]] = []  # (seq, kafka-python future), seq order
        self._up = False          # the link was checked and no send failed since
        self._retry_at = 0.0      # publish() tries a down link again only after this
        self._backoff = 1.0
        self._last_error: str | None = None
        self.sent = 0             # events the broker acknowledged, in this process

    # -- publishing --------------------------------------------------------------------

    def publish(self, resource: dict[str, Any], action: str = "upsert") -> Any:
        """Queue one event. With an outbox: stored (committed) when this returns; returns
        the event id. Without: returns kafka-python's future. ``flush()`` waits for acks."""
        env = build_envelope(self._signer, resource, action)
        if self._outbox is None:
            return self._send_direct(env.key.encode(), env.data, env.headers())
        self._store([env])
        return env.id

    def publish_many(self, resources: Iterable[dict[str, Any]], action: str = "upsert"
                     ) -> list[str]:
        """Queue several events in one outbox transaction (all or none), signed under one
        manifest; their event ids."""
        envs = build_envelopes(self._signer, resources, action)
        if self._outbox is None:
            for env in envs:
                self._send_direct(env.key.encode(), env.data, env.headers())
        else:
            self._store(envs)
        return [e.id for e in envs]

    def publish_raw(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]):
        """A record as given (tests of the hub's refusals send malformed ones)."""
        if self._outbox is None:
            return self._send_direct(key, value, headers)
        eid = header_value(headers, "ce_id") or f"raw-{uuid.uuid4().hex}"
        row = NewRow(eid, self.topic, key, value, list(headers), _now_ms())
        with self._lock:
            self._outbox.add([row])
            self._pump(wait=0)
        return eid

    def _send_direct(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]):
        assert self._producer is not None
        return self._producer.send(self.topic, key=key, value=value, headers=headers,
                                   timestamp_ms=_now_ms())

    def _store(self, envs: list[Envelope]) -> None:
        assert self._outbox is not None
        # The record timestamp is fixed now and stored: the hub judges a retired key by it,
        # so an event signed before a key rotation stays acceptable however late it is sent.
        ts = _now_ms()
        rows = [NewRow(e.id, self.topic, e.key.encode(), e.data, e.headers(), ts)
                for e in envs]
        with self._lock:
            self._outbox.add(rows)
            self._pump(wait=0)

    @property
    def pending(self) -> int:
        """Events stored in the outbox and not yet acknowledged by the broker."""
        return self._outbox.rows if self._outbox else 0

    # -- sending from the outbox -------------------------------------------------------

    def flush(self, timeout: float | None = 30.0) -> FlushResult:
        """Send everything pending, for at most ``timeout`` seconds; say what is left.

        With an outbox this does not raise when the broker is unreachable: the result's
        ``pending`` counts what is still stored (it will be sent by a later flush, or by
        publishing once the link is back). Without an outbox kafka-python's timeout error
        propagates, as before."""
        if self._outbox is None:
            assert self._producer is not None
            self._producer.flush(timeout)
            return FlushResult(0, 0, "all events acknowledged by the broker")
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        before = self.sent
        with self._lock:
            self._refused_now = []
            while True:
                left = deadline - time.monotonic()
                self._pump(wait=max(0.0, left), force=True, budget=left)
                if self._up and self.confirm == "journal":
                    self._settle(wait_ms=int(max(0.0, min(0.2, left)) * 1000))
                if (not self._outbox.rows and not self._inflight) or \
                        deadline - time.monotonic() <= 0:
                    break
                if not self._up:  # the link is down: do not spin on it
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            return self._result(self.sent - before)

    def refusals(self) -> list[tuple[str, str, int]]:
        """Every event of this outbox the hub refused: (event id, reason, when in ms)."""
        return self._outbox.refusals() if self._outbox else []

    def _result(self, sent: int) -> FlushResult:
        assert self._outbox is not None
        pending = self._outbox.rows
        refused = tuple(self._refused_now)
        note = (f"; the hub refused {len(refused)} (first: {refused[0][1]}), kept in "
                f"{self._outbox.path} (refusals())" if refused else "")
        done = "journaled by the hub" if self.confirm == "journal" else "acknowledged"
        if not pending:
            return FlushResult(0, sent, f"all events {done} ({sent} sent in this flush); the "
                                        f"outbox is empty{note}", refused)
        unsent = self._outbox.unsent
        why = self._last_error or self._outbox.last_error() or "no acknowledgement yet"
        if not unsent:
            why = self._receipts_error or (
                f"the broker has them; waiting for the hub's receipt on "
                f"{self.receipts_topic} (the hub journals them when its ingest stage and "
                "journal run)")
        return FlushResult(pending, sent, (
            f"{pending} events still pending in the outbox {self._outbox.path} ({sent} sent "
            f"in this flush, {unsent} not yet on the broker): {why}. They are kept, signed "
            "and in order, and will be sent by a later flush() or publish once the hub's "
            f"broker answers{note}."), refused)

    def _pump(self, wait: float, force: bool = False, budget: float | None = None) -> None:
        """Record the acks of the chunk in flight; hand the next chunk to kafka-python if
        the link is up. ``wait`` bounds the time spent waiting for acks."""
        self._collect(wait)
        if self._inflight or not self._outbox.rows:  # type: ignore[union-attr]
            return
        if not self._up and not force and time.monotonic() < self._retry_at:
            return  # publish() must not stall on a link known to be down
        if self._up or self._connect(budget):
            self._send_chunk()
            if wait:
                self._collect(wait)

    def _collect(self, wait: float) -> None:
        if not self._inflight:
            return
        assert self._producer is not None and self._outbox is not None
        if wait > 0:
            with contextlib.suppress(KafkaTimeoutError):
                self._producer.flush(wait)
        if not all(f.is_done for _, f in self._inflight):
            return
        acked = [(s, f.value) for s, f in self._inflight if f.succeeded()]
        failed = [(s, f.exception) for s, f in self._inflight if not f.succeeded()]
        self._inflight = []
        crashpoint(os.environ.get("HUB_CRASH_AT"), "sdk_outbox_before_ack_recorded")
        # Recorded before anything else happens: the longer an ack stays unrecorded, the
        # longer the window in which a crash would make us look for it on the topic.
        self._outbox.delivered([s for s, _ in acked],
                               [(md.topic, md.partition, md.offset) for _, md in acked],
                               keep_until_receipt=self.confirm == "journal",
                               now_ms=_wall_ms())
        self.sent += len(acked)
        if failed:
            # The failed rows stay (marked handed); they are checked against the topic and
            # sent again, oldest first, once the link is back.
            self._down(f"the broker did not acknowledge {len(failed)} events: "
                       f"{failed[0][1]!r}")
            self._outbox.note_error([s for s, _ in failed], self._last_error or "")

    def _send_chunk(self) -> None:
        assert self._producer is not None and self._outbox is not None
        rows = self._outbox.head(self._chunk)
        # Marked before they are handed over: after a crash these are the rows that may be
        # on the topic already.
        self._outbox.mark_handed(r.seq for r in rows)
        for row in rows:
            try:
                fut = self._producer.send(row.topic, key=row.key, value=row.value,
                                          headers=row.headers, timestamp_ms=row.timestamp_ms)
            except KafkaError as exc:
                # Nothing after this row is handed over, so order is kept; what was handed
                # is collected as usual.
                self._down(f"kafka-python refused to send: {exc!r}")
                break
            self._inflight.append((row.seq, fut))

    def _down(self, error: str) -> None:
        self._up = False
        self._last_error = error
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 60.0)
        log.warning("facility outbox: link to %s is down: %s", self.bootstrap, error)

    def _connect(self, budget: float | None = None) -> bool:
        """Reach the broker; set the scan marks; find on the topic the rows a crash or a
        failed send left unacknowledged, so they are not sent twice."""
        assert self._outbox is not None
        # One attempt takes at most connect_timeout_ms, less when flush() has less left.
        wait_ms = self._connect_timeout_ms if budget is None else \
            max(200, min(self._connect_timeout_ms, int(budget * 1000)))
        try:
            if self._producer is None:
                self._producer = KafkaProducer(**{**self._config,
                                                  "bootstrap_timeout_ms": wait_ms})
            if self._consumer is None:
                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                    client_id=f"facility-{self.facility_id}-outbox",
                    bootstrap_timeout_ms=wait_ms,
                    request_timeout_ms=self._config["request_timeout_ms"],
                    max_partition_fetch_bytes=16 * 1024 * 1024,
                    fetch_max_bytes=64 * 1024 * 1024)
            for topic in self._outbox.topics():
                self._reconcile(topic, wait_ms)
            if self.confirm == "journal":
                self._open_receipts(wait_ms)
        except KafkaError as exc:
            self._down(f"the hub's broker at {self.bootstrap} does not answer: {exc!r}")
            return False
        self._up, self._backoff, self._last_error = True, 1.0, None
        return True

    def _reconcile(self, topic: str, timeout_ms: int) -> None:
        assert self._producer is not None and self._consumer is not None
        assert self._outbox is not None
        parts = self._producer.partitions_for(topic)  # blocks at most max_block_ms
        if not parts:
            raise KafkaTimeoutError(f"topic {topic} has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        begin = self._consumer.beginning_offsets(tps, timeout_ms)
        end = self._consumer.end_offsets(tps, timeout_ms)
        handed = self._outbox.handed()
        marks = self._outbox.marks(topic)
        fixed: dict[tuple[str, int], int] = {}
        for tp in tps:
            mark = marks.get(tp.partition)
            if mark is None:
                # First contact with this partition: nothing of ours can be there unless
                # rows were handed over before (then we must look from the start).
                fixed[(topic, tp.partition)] = begin[tp] if handed else end[tp]
            elif mark > end[tp]:
                # The log is shorter than our mark: it was replaced (a bundled broker that
                # restarted). Anything of ours on it is somewhere from its beginning, and
                # what it had of ours without a receipt yet may be gone: send it again.
                fixed[(topic, tp.partition)] = begin[tp]
                self._requeue([d for d in self._outbox.awaiting()
                               if (d.topic, d.partition) == (topic, tp.partition)],
                              f"{topic} was replaced (the broker restarted empty)")
        if fixed:
            self._outbox.set_marks(fixed)
            marks = self._outbox.marks(topic)
        if not handed:
            return
        todo = {tp: end[tp] for tp in tps if max(marks[tp.partition], begin[tp]) < end[tp]}
        found: list[int] = []
        offsets: list[tuple[str, int, int]] = []
        if todo:
            self._consumer.assign(list(todo))
            for tp in todo:
                self._consumer.seek(tp, max(marks[tp.partition], begin[tp]))
            deadline = time.monotonic() + 60
            while any(self._consumer.position(tp) < e for tp, e in todo.items()):
                if time.monotonic() > deadline:
                    raise KafkaTimeoutError(f"could not read {topic} to check which events "
                                            "already arrived")
                for tp, records in self._consumer.poll(timeout_ms=500).items():
                    for rec in records:
                        eid = header_value(rec.headers, "ce_id")
                        if eid in handed:
                            found.append(handed.pop(eid))
                            offsets.append((topic, tp.partition, rec.offset))
            self._consumer.assign([])
        if found:
            log.info("facility outbox: %d events had reached %s before their ack was "
                     "recorded; not sending them again", len(found), topic)
            self._outbox.delivered(found, offsets)
            self.sent += len(found)

    # -- receipts ----------------------------------------------------------------------

    def _open_receipts(self, timeout_ms: int) -> None:
        """Read the receipts from where this outbox left off. Failing to is not a reason to
        stop sending: the events wait for their receipts in the outbox either way."""
        assert self._outbox is not None
        try:
            if self._receipts is None:
                self._receipts = ReceiptReader(self.bootstrap, self.facility_id,
                                               self.receipts_topic, timeout_ms,
                                               f"facility-{self.facility_id}-receipts")
            part = self._receipts.locate()
            mark = self._outbox.marks(self.receipts_topic).get(part)
            # No place kept yet but events already out: their receipts may be anywhere.
            first = -1 if mark is None and self._outbox.awaiting() else mark
            start = self._receipts.start_at(first, timeout_ms)
        except KafkaError as exc:
            self._receipts_error = f"cannot read the hub's receipts: {exc}"
            log.warning("facility outbox: %s", self._receipts_error)
            return
        self._receipts_error = None
        if start != mark:
            self._outbox.set_marks({(self.receipts_topic, part): start})

    def _settle(self, wait_ms: int) -> None:
        """Read the hub's receipts and let go of the events they name; now and then, look
        for a replaced log or receipts that are overdue."""
        assert self._outbox is not None
        if not self._outbox.rows:
            return
        try:
            if time.monotonic() >= self._next_check or self._receipts_error:
                self._next_check = time.monotonic() + 5.0
                for topic in self._outbox.topics():  # a broker that restarted empty
                    self._reconcile(topic, self._connect_timeout_ms)
                self._open_receipts(self._connect_timeout_ms)
                self._resend_overdue()
            if self._receipts is None or self._receipts_error:
                time.sleep(wait_ms / 1000)
                return
            batch = self._receipts.poll(wait_ms)
        except KafkaError as exc:
            self._down(f"cannot read the hub's receipts: {exc!r}")
            return
        if batch is None:
            return
        journaled = [i for r in batch.receipts for i in r.journaled]
        refused: dict[str, str] = {}
        for r in batch.receipts:
            refused.update(r.refused)
        # ``replayed`` names a copy of this very event (we never reuse an id): another copy
        # is in the hub's hands, and its receipt will come. Keep waiting for it.
        again = {i for i, why in refused.items() if why.startswith("replayed")}
        refused = {i: why for i, why in refused.items() if i not in again}
        gone, bad = self._outbox.settle(
            journaled, refused, (self.receipts_topic, self._receipts.partition,
                                 batch.next_offset), _wall_ms())
        self.journaled += gone
        if refused and bad:
            self._refused_now += list(refused.items())
            log.warning("facility outbox: the hub refused %d events (first %s: %s); they "
                        "are kept in the outbox file's refusals", len(refused),
                        *next(iter(refused.items())))

    def _resend_overdue(self) -> None:
        assert self._outbox is not None
        now = _wall_ms()
        late = [d for d in self._outbox.awaiting()
                if now - d.delivered_ms > 1000 * min(
                    3600.0, self.receipt_timeout * 2 ** max(0, d.attempts - 1))]
        self._requeue(late, f"no receipt from the hub within {self.receipt_timeout:g} s")

    def _requeue(self, rows: list, why: str) -> None:
        if rows:
            assert self._outbox is not None
            log.warning("facility outbox: sending %d events again: %s", len(rows), why)
            self._outbox.requeue(d.seq for d in rows)

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def from_key_file(cls, bootstrap: str, kid: str, key_file: str | Path,
                      **kwargs: Any) -> FacilityPublisher:
        return cls(bootstrap, Signer(kid, read_private_key(Path(key_file))), **kwargs)

    def close(self) -> None:
        """Close the connections; with an outbox, unsent events stay stored for next time."""
        if self._outbox is None:
            if self._producer is not None:
                self._producer.close()
            return
        with self._lock:
            if self._inflight:
                self._collect(5.0)
            if self._producer is not None:
                self._producer.close(timeout=5)
            if self._consumer is not None:
                self._consumer.close()
            if self._receipts is not None:
                self._receipts.close()
            self._outbox.close()

    def __enter__(self) -> FacilityPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush(self.exit_flush_timeout)
        finally:
            self.close()


def _now_ms() -> int:
    # The record's timestamp is when it was published: the hub judges retired keys by it,
    # so it comes from the same clock as the registry's rotation times.
    return int(clock.now().timestamp() * 1000)


def _wall_ms() -> int:
    # Durations between a delivery and its receipt, across restarts: the machine's clock,
    # not the domain clock (a test's shifted clock must not make receipts look overdue).
    return int(time.time() * 1000)
