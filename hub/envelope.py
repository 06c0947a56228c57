"""The hub's event: a CloudEvents 1.0 record in Kafka *binary* mode.

Headers carry the CloudEvents attributes (``ce_specversion``, ``ce_id``, ``ce_source``,
``ce_type``, ``ce_subject``, ``ce_time``), ``content-type`` and the facility signature
``ce_signature``; the value is the FHIR resource JSON; the Kafka key is the patient key so
one patient's events keep their order. ``schemas/envelope.schema.json`` is the same contract.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hub import clock
from hub.errors import EnvelopeError

SPECVERSION = "1.0"
FHIR_JSON = "application/fhir+json"
SOURCE_PREFIX = "urn:hie:facility:"
_PREFIX_LEN = len(SOURCE_PREFIX)
HUB_SOURCE = "urn:hie:hub"  # events the hub itself authors: registry, patient index
HUB_ID = "hub"
ACTIONS = ("upsert", "delete")

FACILITY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
TYPE_PATTERN = re.compile(r"^fhir\.([A-Z][A-Za-z]+)\.(upsert|delete)\.v1$")
SUBJECT_PATTERN = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time")


class Addressed:
    """What an event's CloudEvents attributes say about it: who sent it, about what."""

    __slots__ = ()
    source: str
    type: str
    subject: str

    @property
    def facility_id(self) -> str:
        """The publishing facility's id; ``hub`` for events the hub authored."""
        return HUB_ID if self.source == HUB_SOURCE else self.source[_PREFIX_LEN:]

    @property
    def resource_type(self) -> str:
        return self.subject.split("/", 1)[0]

    @property
    def resource_id(self) -> str:
        return self.subject.split("/", 1)[1]

    @property
    def action(self) -> str:
        return self.type.split(".")[2]

    @property
    def is_delete(self) -> bool:
        return self.type.endswith(".delete.v1")


@dataclass(frozen=True, slots=True)
class Envelope(Addressed):
    """One event. ``data`` is the resource JSON exactly as accepted (for a delete: empty,
    or ``{"resourceType", "id", "meta": {"versionId"}}`` naming the version it deletes)."""

    id: str
    source: str
    type: str
    subject: str
    time: str
    key: str
    data: bytes
    content_type: str = FHIR_JSON
    signature: str | None = None
    extra: tuple[tuple[str, bytes], ...] = field(default=())

    def signed(self, signature: str) -> Envelope:
        # Positional construction: dataclasses.replace() costs more than the HMAC itself.
        return Envelope(self.id, self.source, self.type, self.subject, self.time, self.key,
                        self.data, self.content_type, signature, self.extra)

    def headers(self) -> list[tuple[str, bytes]]:
        out = [
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_subject", self.subject.encode()),
            ("ce_time", self.time.encode()),
            ("content-type", self.content_type.encode()),
        ]
        if self.signature:
            out.append(("ce_signature", self.signature.encode()))
        out.extend(self.extra)
        return out

    @classmethod
    def from_record(
        cls, headers: Sequence[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None
    ) -> Envelope:
        """Decode a Kafka record; raise EnvelopeError naming the first bad header.

        The same answer as :meth:`from_record_checked`, for less: the attributes that
        repeat are checked once (``_quick_fields``)."""
        found = _quick_fields(headers, key, value)
        if found is None:
            return cls.from_record_checked(headers, key, value)
        id_, source, type_, subject, time, text, data, signature, content_type, extra = found
        return cls(id_, source, type_, subject, time, text, data, content_type, signature,
                   extra)

    @classmethod
    def from_record_checked(
        cls, headers: Sequence[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None
    ) -> Envelope:
        """:meth:`from_record` by every check of the contract in turn, naming the first
        that fails."""
        h: dict[str, str] = {}
        extra: list[tuple[str, bytes]] = []
        for name, raw in headers or ():
            try:
                text = raw.decode() if raw is not None else ""
            except UnicodeDecodeError as exc:
                raise EnvelopeError(f"header {name!r} is not UTF-8") from exc
            if name.startswith("ce_") or name == "content-type":
                if "\x00" in text:  # ids, subjects, times are SQL text: no NUL there
                    raise EnvelopeError(f"header {name!r} contains a NUL character")
                h[name] = text
            else:
                extra.append((name, raw))
        missing = [n for n in REQUIRED if not h.get(n)]
        if missing:
            raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
        if h["ce_specversion"] != SPECVERSION:
            raise EnvelopeError(
                f"ce_specversion must be {SPECVERSION}, got {h['ce_specversion']!r}")
        env = cls(
            id=h["ce_id"],
            source=h["ce_source"],
            type=h["ce_type"],
            subject=h["ce_subject"],
            time=h["ce_time"],
            key=(key or b"").decode(errors="replace"),
            data=value or b"",
            content_type=h.get("content-type") or FHIR_JSON,
            signature=h.get("ce_signature"),
            extra=tuple(extra),
        )
        if "\x00" in env.key:
            raise EnvelopeError("the Kafka key contains a NUL character")
        check(env)
        return env


def check(env: Envelope) -> None:
    """Raise EnvelopeError unless every attribute has the form the contract requires."""
    if env.source != HUB_SOURCE and (
            not env.source.startswith(SOURCE_PREFIX) or not FACILITY_ID.match(env.facility_id)):
        raise EnvelopeError(f"ce_source must be {SOURCE_PREFIX}<facility-id>, got {env.source!r}")
    m = TYPE_PATTERN.match(env.type)
    if not m:
        raise EnvelopeError(f"ce_type must look like fhir.<Type>.upsert.v1, got {env.type!r}")
    s = SUBJECT_PATTERN.match(env.subject)
    if not s:
        raise EnvelopeError(f"ce_subject must be <Type>/<id>, got {env.subject!r}")
    if s.group(1) != m.group(1):
        raise EnvelopeError(f"ce_subject type {s.group(1)} does not match ce_type {env.type}")
    if env.content_type != FHIR_JSON:
        raise EnvelopeError(f"content-type must be {FHIR_JSON}, got {env.content_type!r}")
    try:
        datetime.fromisoformat(env.time.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EnvelopeError(f"ce_time is not an RFC 3339 timestamp: {env.time!r}") from exc
    if not env.key:
        raise EnvelopeError("the Kafka key (patient key) is empty")
    if env.action == "upsert" and not env.data:
        raise EnvelopeError("an upsert event needs the resource JSON as its value")


# What check() concluded about each (source, type, content-type) seen: the resource type
# the type names and whether it is an upsert, or None when the contract refuses it. A log
# carries a few dozen such triples and millions of events: the regexes run once a triple.
_ADDRESSES: dict[tuple[str, str, str], tuple[str, bool] | None] = {}
_ADDRESSES_MAX = 4096  # a producer writing junk must not grow it without bound


def _address(source: str, type_: str, content_type: str) -> tuple[str, bool] | None:
    key = (source, type_, content_type)
    try:
        return _ADDRESSES[key]
    except KeyError:
        pass
    m = TYPE_PATTERN.match(type_)
    ok = m is not None and content_type == FHIR_JSON and (source == HUB_SOURCE or (
        source.startswith(SOURCE_PREFIX) and FACILITY_ID.match(source[_PREFIX_LEN:])))
    found = (m.group(1), m.group(2) == "upsert") if ok and m else None
    if len(_ADDRESSES) >= _ADDRESSES_MAX:
        _ADDRESSES.clear()
    _ADDRESSES[key] = found
    return found


def _quick_fields(headers: Sequence[tuple[str, bytes]] | None, key: bytes | None,
                  value: bytes | None
                  ) -> tuple[str, str, str, str, str, str, bytes, str | None, str,
                             tuple[tuple[str, bytes], ...]] | None:
    """``(id, source, type, subject, time, key, data, signature, content type, extra
    headers)`` of a record the contract accepts; None when any check fails or cannot tell
    (``Envelope.from_record_checked`` then names what is wrong). Exactly the records
    ``from_record_checked`` accepts, for less on a real log: the (source, type,
    content-type) triples that repeat are checked once each (``_address``)."""
    try:
        h: dict[str, str] = {}
        extra: list[tuple[str, bytes]] = []
        for name, raw in headers or ():
            if name.startswith("ce_") or name == "content-type":
                h[name] = raw.decode()
            else:
                if raw is not None:
                    raw.decode()  # every header must be UTF-8, kept or not
                extra.append((name, raw))
        id_, source, type_ = h["ce_id"], h["ce_source"], h["ce_type"]
        subject, time = h["ce_subject"], h["ce_time"]
        text = (key or b"").decode(errors="replace")
        data = value or b""
        content_type = h.get("content-type") or FHIR_JSON
        address = _address(source, type_, content_type)
        s = SUBJECT_PATTERN.match(subject)
        if (address is not None and s is not None and s.group(1) == address[0]
                and h["ce_specversion"] == SPECVERSION and id_ and text
                and (data or not address[1])
                and not any("\x00" in v for v in h.values()) and "\x00" not in text):
            datetime.fromisoformat(time.replace("Z", "+00:00"))
            return (id_, source, type_, subject, time, text, data, h.get("ce_signature"),
                    content_type, tuple(extra))
    except (KeyError, ValueError, AttributeError):  # UnicodeDecodeError is a ValueError
        pass
    return None


def record_fields(headers: Sequence[tuple[str, bytes]] | None, key: bytes | None,
                  value: bytes | None
                  ) -> tuple[str, str, str, str, str, str, bytes, str | None]:
    """``(id, source, type, subject, time, key, data, signature)`` of a Kafka record, for a
    consumer that needs the fields, not an :class:`Envelope`: exactly the records
    :meth:`Envelope.from_record` accepts. A record that fails the quick reading is handed
    to ``from_record_checked``, which names what is wrong (EnvelopeError).
    """
    found = _quick_fields(headers, key, value)
    if found is not None:
        return found[:8]
    env = Envelope.from_record_checked(headers, key, value)  # raises, naming the first bad one
    return env.id, env.source, env.type, env.subject, env.time, env.key, env.data, env.signature


def now_rfc3339() -> str:
    return clock.now_rfc3339()


_ID_PREFIX = uuid.uuid4().hex
_ID_COUNTER = itertools.count()


def new_event_id() -> str:
    """A unique event id: a random per-process prefix and a counter.

    As unique as a uuid4 per event (the 128-bit prefix is drawn once per process), at a
    fraction of its cost on the gateway's hot path.
    """
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def new_event(
    facility_id: str,
    resource_type: str,
    resource_id: str,
    key: str,
    data: bytes,
    action: str = "upsert",
    time: str | None = None,
) -> Envelope:
    """Build a fresh envelope with a new event id; signing is the caller's next step."""
    return Envelope(
        id=new_event_id(),
        source=f"{SOURCE_PREFIX}{facility_id}",
        type=f"fhir.{resource_type}.{action}.v1",
        subject=f"{resource_type}/{resource_id}",
        time=time or now_rfc3339(),
        key=key,
        data=data,
    )


def header_value(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    for n, v in headers or ():
        if n == name:
            return v.decode(errors="replace")
    return None
