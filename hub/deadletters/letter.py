"""A dead letter: refused input, byte for byte, and why it was refused. Pure: no Kafka, no SQL.

Nothing refused is lost: the letter carries the input exactly as it arrived (HTTP body or
record value, Kafka key, headers), so an operator can fix the cause and send it again. It is
kept as a row in SQL (:mod:`hub.deadletters.store`) and published to ``hie.deadletter.v1``
as a feed (:meth:`DeadLetter.record`).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub import clock
from hub.envelope import HUB_ID, HUB_SOURCE, SOURCE_PREFIX, header_value
from hub.fhir import Issue, operation_outcome, patient_local_id

Header = tuple[str, bytes | None]
Record = tuple[bytes | None, bytes, list[Header]]

# Headers the hub writes on the topic copy; the same names arriving with the input are
# dropped there (an earlier refusal's, or a sender's forgery), but kept in the SQL copy.
_OWN_HEADERS = ("hub_error_", "hub_deadletter_id", "hub_facility")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused input. ``entry`` is where it was refused: ``gateway``, ``ingest``,
    ``projection:<name>``, ``hl7v2``; ``reason`` a short code (``invalid-json``,
    ``bad-signature``...), ``detail`` the first problem in words."""

    id: str
    entry: str
    reason: str
    original: bytes
    refused_at: str
    detail: str = ""
    facility: str | None = None
    event_id: str | None = None
    resource_type: str | None = None
    subject: str | None = None
    patient_key: str | None = None
    outcome: dict | None = None
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    origin: str | None = None  # "<topic>/<partition>/<offset>" it was read from

    def record(self) -> Record:
        """The message for ``hie.deadletter.v1``: the original key, value and headers, plus
        ``hub_error_*`` headers saying what went wrong and ``hub_deadletter_id`` (the row)."""
        out = [(n, v) for n, v in self.headers if not n.startswith(_OWN_HEADERS)]
        reason = f"{self.reason}: {self.detail}" if self.detail else self.reason
        out += [("hub_error_stage", self.entry.encode()),
                ("hub_error_reason", reason[:2000].encode()),
                ("hub_error_time", self.refused_at.encode()),
                ("hub_deadletter_id", self.id.encode())]
        if self.outcome is not None:
            out.append(("hub_error_outcome", orjson.dumps(self.outcome)))
        if self.origin is not None:
            out.append(("hub_error_origin", self.origin.encode()))
        if self.facility is not None:
            out.append(("hub_facility", self.facility.encode()))
        return self.key, self.original, out


def from_record(key: bytes | None, value: bytes | None, headers: Iterable[Header],
                letter_id: str, fallback_time: str) -> DeadLetter:
    """The letter a ``hie.deadletter.v1`` message carries (the inverse of
    :meth:`DeadLetter.record`), under ``letter_id``: the caller decides, as whoever may write
    to the topic could claim any id. A message without a refusal time takes
    ``fallback_time``."""
    own: dict[str, str] = {}
    original: list[Header] = []
    for name, raw in headers:
        if name.startswith(_OWN_HEADERS):
            own[name] = (raw or b"").decode(errors="replace")
        else:
            original.append((name, raw))
    code, _, detail = own.get("hub_error_reason", "unknown").partition(": ")
    claims = about_record(original, key)
    if own.get("hub_facility"):
        claims["facility"] = own["hub_facility"]
    outcome = own.get("hub_error_outcome")
    try:
        parsed = orjson.loads(outcome) if outcome else None
    except orjson.JSONDecodeError:
        parsed = None
    return DeadLetter(
        id=letter_id,
        entry=own.get("hub_error_stage", "unknown")[:200], reason=code[:64],
        original=value or b"", refused_at=_cap(own.get("hub_error_time"), 40) or fallback_time,
        detail=detail[:2000], outcome=parsed if isinstance(parsed, dict) else None, key=key,
        headers=tuple(original), **_capped(**claims, origin=own.get("hub_error_origin")))


def letter_id(natural_key: Sequence[object] | None = None) -> str:
    """A fresh id, or one derived from where the input was read (the same place again, the
    same id: a record handled twice after a crash is one dead letter)."""
    if natural_key is None:
        return uuid.uuid4().hex
    return hashlib.sha256("\x1f".join(map(str, natural_key)).encode()).hexdigest()[:32]


def _cap(value: object, n: int) -> str | None:
    # Column widths bind on PostgreSQL; what a sender claims can be any length.
    return None if value is None or value == "" else str(value)[:n]


_WIDTHS = {"facility": 64, "event_id": 200, "resource_type": 64, "subject": 200,
           "patient_key": 200, "origin": 300}


def _capped(**fields: object) -> dict[str, str | None]:
    return {name: _cap(value, _WIDTHS[name]) for name, value in fields.items()}


def refuse(entry: str, reason: str, original: bytes, *, issues: Sequence[Issue] = (),
           natural_key: Sequence[object] | None = None, detail: str | None = None,
           facility: str | None = None, event_id: str | None = None,
           resource_type: str | None = None, subject: str | None = None,
           patient_key: str | None = None, key: bytes | None = None,
           headers: Iterable[Header] = (), origin: str | None = None) -> DeadLetter:
    """A dead letter refused now (by the hub clock); the OperationOutcome is built from
    ``issues``, and ``detail`` defaults to the first issue's words."""
    if detail is None:
        detail = issues[0].diagnostics if issues else ""
    return DeadLetter(
        id=letter_id(natural_key), entry=entry[:200], reason=reason[:64],
        original=original, refused_at=clock.now_rfc3339(), detail=detail[:2000],
        outcome=operation_outcome(list(issues)) if issues else None, key=key,
        headers=tuple(headers),
        **_capped(facility=facility, event_id=event_id, resource_type=resource_type,
                  subject=subject, patient_key=patient_key, origin=origin))


def refuse_record(entry: str, reason: str, issues: Sequence[Issue], scope: str, topic: str,
                  topic_id: str, partition: int, offset: int, key: bytes | None,
                  value: bytes | None, headers: Iterable[Header] | None) -> DeadLetter:
    """A refused Kafka record: value, key and headers as read, what its headers claim, and an
    id from where it was read. ``scope`` names the reader whose refusals are one: a record
    it handles again after a crash is the same letter."""
    headers = tuple(headers or ())
    return refuse(entry, reason, value or b"", issues=issues,
                  natural_key=(scope, topic_id, topic, partition, offset), key=key,
                  headers=headers, origin=f"{topic}/{partition}/{offset}",
                  **about_record(headers, key))


def about_resource(facility: str, resource: Any, resource_type: str | None = None,
                   resource_id: str | None = None) -> dict[str, str | None]:
    """What a refused body says about itself, as far as it can be read: its type, subject
    and patient key (``<facility>.<patient id>``). Anything malformed is simply unknown."""
    res = resource if isinstance(resource, dict) else {}
    rtype = res.get("resourceType")
    rtype = rtype if isinstance(rtype, str) and rtype else resource_type
    rid = res.get("id")
    rid = rid if isinstance(rid, str) and rid else resource_id
    local = patient_local_id(res) if res else None
    return {"resource_type": rtype,
            "subject": f"{rtype}/{rid}" if rtype and rid else None,
            "patient_key": f"{facility}.{local}" if isinstance(local, str) and local else None}


def about_record(headers: Iterable[Header] | None, key: bytes | None) -> dict[str, str | None]:
    """What a refused Kafka record claims about itself in its CloudEvents headers: who sent
    it, its event id, subject and patient key. Claims, not facts: the record was refused."""
    hs = [(n, v if v is not None else b"") for n, v in headers or ()]
    source = header_value(hs, "ce_source") or ""
    facility = (HUB_ID if source == HUB_SOURCE else
                source[len(SOURCE_PREFIX):] if source.startswith(SOURCE_PREFIX) else None)
    subject = header_value(hs, "ce_subject")
    rtype = subject.partition("/")[0] if subject and "/" in subject else None
    text = (key or b"").decode(errors="replace")
    # The key is a patient key when it names one of the sender's patients; events about no
    # patient are keyed by the facility alone.
    patient = text if facility and text.startswith(f"{facility}.") else None
    return {"facility": facility, "event_id": header_value(hs, "ce_id"),
            "resource_type": rtype, "subject": subject, "patient_key": patient}


def headers_json(headers: Iterable[Header]) -> str:
    """Headers as JSON, exactly: ``[[name, text]]``, with ``{"base64": ...}`` for a value
    that is not UTF-8 and ``null`` for none."""
    return orjson.dumps([[name, jsonable(value)] for name, value in headers]).decode()


def jsonable(value: bytes | None) -> str | dict[str, str] | None:
    """Bytes in JSON, exactly: the text if they are UTF-8, else ``{"base64": ...}``."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def headers_from_json(text: str) -> list[Header]:
    out: list[Header] = []
    for name, value in orjson.loads(text or "[]"):
        if isinstance(value, dict):
            out.append((name, base64.b64decode(value["base64"])))
        else:
            out.append((name, None if value is None else value.encode()))
    return out
