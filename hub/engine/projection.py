"""What a projection is: declared tables, and a pure function from events to row changes.

A projection never touches Kafka or SQL. The engine feeds it batches of :class:`Event`, takes
the :class:`Upsert` / :class:`UpsertRows` / :class:`Increment` changes it returns, and writes
them, the consumer position and the applied event ids in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from hub.envelope import Addressed, Envelope, record_fields


# Not frozen, though nothing assigns to an event: a frozen dataclass sets each of its twelve
# fields through object.__setattr__, which made building the events cost 6-7 % of a rebuild.
# Hashable and comparable as before.
@dataclass(slots=True, unsafe_hash=True)
class Event(Addressed):
    """An accepted event and where it sits in the log (or the journal, when replaying)."""

    id: str
    source: str
    type: str
    subject: str
    time: str
    key: str
    data: bytes
    topic: str = ""
    partition: int = -1
    offset: int = -1
    signature: str | None = None
    topic_id: str = ""

    @classmethod
    def from_envelope(cls, env: Envelope, topic: str, partition: int, offset: int,
                      topic_id: str = "") -> Event:
        return cls(env.id, env.source, env.type, env.subject, env.time, env.key, env.data,
                   topic, partition, offset, env.signature, topic_id)

    @classmethod
    def from_record(cls, record: Any, topic: str, topic_id: str = "") -> Event:
        """The event a Kafka record (aiokafka's ConsumerRecord) carries; EnvelopeError if the
        record is not one the contract accepts (``hub.envelope.record_fields``)."""
        id_, source, type_, subject, time, key, data, signature = record_fields(
            record.headers, record.key, record.value)
        return cls(id_, source, type_, subject, time, key, data, topic, record.partition,
                   record.offset, signature, topic_id)

    def resource(self) -> dict[str, Any]:
        """The resource, parsed fast: it was validated once at the edge."""
        return orjson.loads(self.data) if self.data else {}


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert ``row`` or replace the row with the same key.

    With ``guard`` set (a column name), the existing row is replaced only when the new value
    of that column is strictly greater, so a late or repeated older version never wins.
    With ``replace`` False an existing row is kept as it is (insert if absent).
    With ``guard_against`` the new ``guard`` value is compared with that column instead.
    """

    table: str
    row: dict[str, Any]
    keys: tuple[str, ...]
    guard: str | None = None
    replace: bool = True
    # Compare the new ``guard`` value with this column of the existing row instead of the
    # same column: "a claim made after the current claim expired" (claimed_at > expires).
    guard_against: str | None = None


@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``counts`` to the row with ``keys`` (creating it), and set ``latest`` columns to
    the greater of old and new (timestamps as ISO strings compare correctly)."""

    table: str
    keys: dict[str, Any]
    counts: dict[str, int]
    latest: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpsertRows:
    """Many :class:`Upsert` of one shape, in order: ``rows`` are tuples of ``columns``.

    What a projection returns when it writes one row per event into one table (the shared
    record): one object a batch instead of a dict and an ``Upsert`` per event, and the rows
    go to the driver's executemany as they are. The same guard rules as ``Upsert``.
    """

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    keys: tuple[str, ...]
    guard: str | None = None
    replace: bool = True
    guard_against: str | None = None


Change = Upsert | UpsertRows | Increment


class Projection(Protocol):
    """A named, versioned fold of the event log into tables.

    ``version`` is bumped whenever the code changes what rows it produces; the runner then
    rebuilds the tables from the journal before consuming live events.
    """

    name: str
    version: int

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        """Declare the tables in ``metadata``, their names ending in ``suffix`` (shadow)."""
        ...

    def apply(self, events: Sequence[Event]) -> list[Change]:
        """Row changes for a batch of events, in order. Must not do I/O."""
        ...
