"""The SDK's local outbox: what the facility could not send yet, kept in SQLite.

A village clinic's link drops for hours. Every event is signed once, at publish time, and
written here (one row per event: seq, event id, topic, key, value, headers, record timestamp)
in a committed transaction *before* kafka-python sees it. A row is deleted only once the hub
says on ``hie.receipts.v1`` that its journal committed the event (or that it refused it: the
row then moves to ``refused`` with the reason); with ``confirm="broker"``, once the broker
acknowledged it (``acks=all``). Between the broker's ack and the receipt a row is
``delivered`` (partition and offset recorded): with the bundled broker, which keeps its log
in memory, that is not yet safe, and a delivered row is sent again if the log it went to is
replaced or no receipt comes. Rows are sent in ``seq`` order, so one patient's events
keep their order, and always as the stored bytes: a resend has the same event id, signature
and record timestamp as the first attempt.

Rows carry a ``handed`` flag (given to kafka-python, no ack recorded yet). A crash, or a
timeout, between the broker's append and our delete leaves such rows behind; sending them
again would put a second inbound record with the same event id on the topic, which the
hub's ingest stage dead-letters as ``replayed`` (the first copy is still accepted, so the
resource is not lost, but the dead letter is noise an operator has to understand). To avoid
it, the outbox remembers per partition an offset from which any of its unacknowledged records
can be found (``scan_from``: the partition's end when it connected, then the offset after
each ack), and before sending handed rows again it reads the partitions from there and
drops the rows whose event id is already on the topic.

This module is storage only; ``adapters.sdk.publisher`` does the sending.
"""

from __future__ import annotations

import base64
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

DEFAULT_MAX_ROWS = 200_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    key          BLOB,
    value        BLOB NOT NULL,
    headers      BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    handed       INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE TABLE IF NOT EXISTS refused (
    event_id     TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    refused_ms   INTEGER NOT NULL,
    value        BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS scan_marks (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    scan_from INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


class OutboxError(RuntimeError):
    """The outbox cannot take or keep events (full, locked by another process, unreadable)."""


class OutboxFull(OutboxError):
    """Publishing would exceed the outbox's bound. Nothing was dropped: the event that was
    refused was not stored, everything stored before is still there."""


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int
    handed: bool


@dataclass(frozen=True, slots=True)
class Delivered:
    seq: int
    event_id: str
    topic: str
    partition: int
    offset: int
    delivered_ms: int
    attempts: int


@dataclass(frozen=True, slots=True)
class NewRow:
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def size(self) -> int:
        return (len(self.key or b"") + len(self.value)
                + sum(len(n) + len(v) for n, v in self.headers))


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    # Header values are bytes; base64 keeps them exact whatever they hold.
    return orjson.dumps([[n, base64.b64encode(v).decode()] for n, v in headers])


def _decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(n, base64.b64decode(v)) for n, v in orjson.loads(raw)]


class Outbox:
    """A bounded, durable, ordered queue of signed records in one SQLite file.

    One process at a time: the file is locked (``<path>.lock``) while it is open, since two
    senders draining one outbox would send events twice. The lock dies with the process, so
    a publisher killed with SIGKILL does not keep its successor out.
    """

    def __init__(self, path: str | Path, max_rows: int = DEFAULT_MAX_ROWS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise OutboxError(f"the outbox {self.path} is in use by another process; one "
                              "publisher per outbox file") from exc
        try:
            # The publisher serialises every use with its lock; any one thread may flush.
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            # WAL: a publish commits without blocking readers; FULL: a committed event
            # survives a power cut, which a village clinic has more often than a crash.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            for name in ("delivered_ms", "d_partition", "d_offset"):
                if name not in columns:  # an outbox file from before receipts
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} INTEGER")
            self.rows, self.bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            self.close()
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc

    # -- writing -----------------------------------------------------------------------

    def add(self, rows: Sequence[NewRow]) -> None:
        """Store ``rows`` in one transaction, all or none; OutboxFull if they do not fit."""
        size = sum(r.size for r in rows)
        if self.rows + len(rows) > self.max_rows or self.bytes + size > self.max_bytes:
            raise OutboxFull(
                f"the outbox {self.path} is full: it holds {self.rows} unsent events "
                f"({self.bytes} bytes; limits {self.max_rows} events, {self.max_bytes} "
                f"bytes) and cannot take {len(rows)} more. Nothing was dropped; these "
                "events were not stored. Send what is waiting (flush() once the link to "
                "the hub is back) or raise the limit.")
        with self._tx():
            self._db.executemany(
                "INSERT INTO outbox (event_id, topic, key, value, headers, timestamp_ms, "
                "size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.event_id, r.topic, r.key, r.value, _encode_headers(r.headers),
                  r.timestamp_ms, r.size) for r in rows])
        self.rows += len(rows)
        self.bytes += size

    def mark_handed(self, seqs: Iterable[int]) -> None:
        with self._tx():
            self._db.executemany(
                "UPDATE outbox SET handed = 1, attempts = attempts + 1 WHERE seq = ?",
                [(s,) for s in seqs])

    def note_error(self, seqs: Iterable[int], error: str) -> None:
        with self._tx():
            self._db.executemany("UPDATE outbox SET last_error = ? WHERE seq = ?",
                                 [(error, s) for s in seqs])

    def delivered(self, seqs: Sequence[int], offsets: Sequence[tuple[str, int, int]],
                  keep_until_receipt: bool = False, now_ms: int = 0) -> None:
        """The broker has ``seqs`` (at ``offsets``, same order): delete them, or with
        ``keep_until_receipt`` record where they are, and move each partition's scan mark
        past those offsets, in one transaction."""
        if not seqs:
            return
        marks: dict[tuple[str, int], int] = {}
        for topic, partition, offset in offsets:
            marks[(topic, partition)] = max(marks.get((topic, partition), -1), offset + 1)
        with self._tx():
            if keep_until_receipt:
                self._db.executemany(
                    "UPDATE outbox SET handed = 0, delivered_ms = ?, d_partition = ?, "
                    "d_offset = ?, last_error = NULL WHERE seq = ?",
                    [(now_ms, p, o, s) for s, (_, p, o) in zip(seqs, offsets, strict=True)])
            else:
                self._delete("seq", list(seqs))
            self._raise_marks(marks)

    def settle(self, journaled: Sequence[str], refused: dict[str, str],
               mark: tuple[str, int, int] | None, now_ms: int = 0) -> tuple[int, int]:
        """Apply receipts: journaled rows go, refused rows move to ``refused``; ``mark`` is
        the receipts partition's next offset. One transaction. (journaled, refused) rows."""
        with self._tx():
            if refused:
                ids = list(refused)
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    self._db.executemany(
                        "INSERT OR REPLACE INTO refused (event_id, reason, refused_ms, value) "
                        "SELECT event_id, ?, ?, value FROM outbox WHERE event_id = ?",
                        [(refused[e], now_ms, e) for e in chunk])
            gone = self._delete("event_id", list(journaled))
            bad = self._delete("event_id", list(refused))
            if mark is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO scan_marks (topic, partition, scan_from) "
                    "VALUES (?, ?, ?)", mark)
        return gone, bad

    def _delete(self, column: str, values: list) -> int:
        """Delete rows by ``column`` inside the caller's transaction; keeps the counts."""
        deleted = 0
        for i in range(0, len(values), 500):  # under SQLite's bind-parameter limit
            chunk = values[i:i + 500]
            marks_sql = ",".join("?" * len(chunk))
            freed, n = self._db.execute(
                f"SELECT coalesce(sum(size), 0), count(*) FROM outbox "
                f"WHERE {column} IN ({marks_sql})", chunk).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE {column} IN ({marks_sql})", chunk)
            self.rows -= n
            self.bytes -= freed
            deleted += n
        return deleted

    def requeue(self, seqs: Iterable[int]) -> None:
        """Send these delivered rows again (their log was replaced, or no receipt came)."""
        with self._tx():
            self._db.executemany(
                "UPDATE outbox SET delivered_ms = NULL, d_partition = NULL, d_offset = NULL "
                "WHERE seq = ?", [(s,) for s in seqs])

    def _raise_marks(self, marks: dict[tuple[str, int], int]) -> None:
        self._db.executemany(
            "INSERT INTO scan_marks (topic, partition, scan_from) VALUES (?, ?, ?) "
            "ON CONFLICT (topic, partition) DO UPDATE SET "
            "scan_from = max(scan_from, excluded.scan_from)",
            [(t, p, o) for (t, p), o in marks.items()])

    def set_marks(self, marks: dict[tuple[str, int], int]) -> None:
        """Set scan marks outright (a new partition, or a log that was replaced)."""
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO scan_marks (topic, partition, scan_from) "
                "VALUES (?, ?, ?)", [(t, p, o) for (t, p), o in marks.items()])

    # -- reading -----------------------------------------------------------------------

    def head(self, limit: int) -> list[Row]:
        """The oldest ``limit`` rows still to send, in publishing order."""
        return [Row(seq, eid, topic, key, value, _decode_headers(headers), ts, bool(handed))
                for seq, eid, topic, key, value, headers, ts, handed in self._db.execute(
                    "SELECT seq, event_id, topic, key, value, headers, timestamp_ms, handed "
                    "FROM outbox WHERE delivered_ms IS NULL ORDER BY seq LIMIT ?", (limit,))]

    @property
    def unsent(self) -> int:
        return self._db.execute(
            "SELECT count(*) FROM outbox WHERE delivered_ms IS NULL").fetchone()[0]

    def awaiting(self) -> list[Delivered]:
        """Rows the broker has and the hub has not answered for yet, oldest first."""
        return [Delivered(*r) for r in self._db.execute(
            "SELECT seq, event_id, topic, d_partition, d_offset, delivered_ms, attempts "
            "FROM outbox WHERE delivered_ms IS NOT NULL ORDER BY seq")]

    def refusals(self) -> list[tuple[str, str, int]]:
        """(event id, reason, refused at ms) of every event the hub refused, oldest first."""
        return list(self._db.execute(
            "SELECT event_id, reason, refused_ms FROM refused ORDER BY refused_ms, event_id"))

    def handed(self) -> dict[str, int]:
        """Event id -> seq of the rows given to Kafka without a recorded ack."""
        return dict(self._db.execute("SELECT event_id, seq FROM outbox WHERE handed = 1"))

    def topics(self) -> list[str]:
        return [t for (t,) in self._db.execute("SELECT DISTINCT topic FROM outbox")]

    def marks(self, topic: str) -> dict[int, int]:
        return dict(self._db.execute(
            "SELECT partition, scan_from FROM scan_marks WHERE topic = ?", (topic,)))

    def last_error(self) -> str | None:
        row = self._db.execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL "
                               "ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    # -- plumbing ----------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
