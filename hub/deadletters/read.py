"""Reading dead letters from SQL: filtered lists, one letter, its original bytes.

Needs only the store, never the broker: what was refused can be looked into while the hub
is stopped. Lists are newest first and carry no bodies; :func:`get_dead_letter` has them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import orjson
import sqlalchemy as sa

from hub import clock
from hub.deadletters.letter import Header, headers_from_json
from hub.store.db import Store
from hub.store.schema import dead_letters as t

_SUMMARY = (t.c.seq, t.c.id, t.c.refused_at, t.c.entry, t.c.reason, t.c.detail, t.c.facility,
            t.c.event_id, t.c.resource_type, t.c.subject, t.c.patient_key, t.c.origin,
            t.c.published, sa.func.length(t.c.original).label("size"))
_DURATION = re.compile(r"\d+(?:\.\d+)?[smhdw]")


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter as kept. ``original``, ``key``, ``headers`` and ``outcome`` are filled
    only by :func:`get_dead_letter`."""

    seq: int
    id: str
    refused_at: str
    entry: str
    reason: str
    detail: str
    facility: str | None
    event_id: str | None
    resource_type: str | None
    subject: str | None
    patient_key: str | None
    origin: str | None
    published: bool
    size: int
    outcome: dict | None = None
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    original: bytes | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    """Which letters: each given field narrows the list. ``since`` and ``until`` are stored
    times (see :func:`parse_instant`); ``visible`` limits to those facilities' letters
    (None: everyone's, including letters from no known facility)."""

    reasons: tuple[str, ...] = ()
    facilities: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    event_id: str | None = None
    visible: frozenset[str] | None = None


def parse_instant(text: str, end: bool = False) -> str:
    """An instant as letters store it (RFC 3339 UTC, microseconds), from what an operator
    types: an RFC 3339 time (no offset: consortium time), a date (a whole consortium day:
    its start, or with ``end`` the start of the next), or a duration ago (``30m``, ``2h``,
    ``7d``). ValueError for anything else."""
    text = text.strip()
    try:
        if _DURATION.fullmatch(text):
            return clock.rfc3339(clock.now() - clock.parse_offset(text))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return clock.rfc3339(datetime.combine(day, time(), clock.CONSORTIUM_TZ))
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return clock.rfc3339(at if at.tzinfo else at.replace(tzinfo=clock.CONSORTIUM_TZ))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a time: give an RFC 3339 time "
                         "(2026-11-23T08:00:00+08:00), a date (2026-11-23) or a duration "
                         "ago (30m, 2h, 7d)") from exc


def _values(given: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]``: either value matches."""
    if given is None:
        return ()
    items = given.split(",") if isinstance(given, str) else given
    return tuple(v.strip() for v in items if v.strip())


def make_filter(reason: str | Sequence[str] | None = None,
                facility: str | Sequence[str] | None = None,
                entry: str | Sequence[str] | None = None, since: str | None = None,
                until: str | None = None, event_id: str | None = None,
                visible: frozenset[str] | None = None) -> Filter:
    """A :class:`Filter` from an operator's words; ValueError names a bad time."""
    return Filter(_values(reason), _values(facility), _values(entry),
                  parse_instant(since) if since else None,
                  parse_instant(until, end=True) if until else None,
                  event_id or None, visible)


def _where(f: Filter) -> list:
    out = []
    for column, values in ((t.c.reason, f.reasons), (t.c.facility, f.facilities),
                           (t.c.entry, f.entries)):
        if values:
            out.append(column.in_(values))
    if f.since:
        out.append(t.c.refused_at >= f.since)
    if f.until:
        out.append(t.c.refused_at < f.until)
    if f.event_id:
        out.append(t.c.event_id == f.event_id)
    if f.visible is not None:
        out.append(t.c.facility.in_(sorted(f.visible)) if f.visible else sa.false())
    return out


def search(store: Store, f: Filter, limit: int = 100, offset: int = 0) -> list[StoredLetter]:
    """Matching letters, newest first, without their bodies."""
    q = (sa.select(*_SUMMARY).where(*_where(f))
         .order_by(t.c.refused_at.desc(), t.c.seq.desc()).limit(limit).offset(offset))
    with store.connect() as conn:
        return [StoredLetter(**r._mapping) for r in conn.execute(q)]


def count(store: Store, f: Filter) -> int:
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t).where(*_where(f))
                            ).scalar_one()


def list_dead_letters(store: Store, reason: str | Sequence[str] | None = None,
                      facility: str | Sequence[str] | None = None, since: str | None = None,
                      until: str | None = None, event_id: str | None = None,
                      entry: str | Sequence[str] | None = None, limit: int = 100,
                      offset: int = 0) -> list[StoredLetter]:
    """The newest ``limit`` letters matching every given filter (see :func:`make_filter`)."""
    return search(store, make_filter(reason, facility, entry, since, until, event_id),
                  limit, offset)


def get_dead_letter(store: Store, letter_id: str) -> StoredLetter | None:
    """One letter with its original bytes, key, headers and OperationOutcome."""
    q = sa.select(*_SUMMARY, t.c.outcome, t.c.original_key, t.c.original_headers,
                  t.c.original).where(t.c.id == letter_id)
    with store.connect() as conn:
        r = conn.execute(q).first()
    if r is None:
        return None
    m = dict(r._mapping)
    outcome, headers = m.pop("outcome"), m.pop("original_headers")
    m["key"] = m.pop("original_key")
    return StoredLetter(**m, outcome=orjson.loads(outcome) if outcome else None,
                        headers=tuple(headers_from_json(headers)))
