"""Consumer progress kept in SQL, next to the rows it guards.

Positions are keyed by consumer, topic, topic identity (Kafka's topic id, so a broker that
lost its memory and recreated the topic is recognised as a new log) and partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.engine.writer import dialect_insert
from hub.store.schema import applied, positions, projections

# Built once: every batch of every runner reads and writes its positions, and building a
# statement costs SQLAlchemy more than running it (~60 of ~80 µs).
_LOAD_POSITIONS = sa.select(positions.c.partition, positions.c.offset).where(
    positions.c.consumer == sa.bindparam("consumer"),
    positions.c.topic == sa.bindparam("topic"),
    positions.c.topic_id == sa.bindparam("topic_id"))
_SAVE_POSITIONS: dict[str, sa.Executable] = {}  # by dialect
_STATE = sa.select(projections.c.version, projections.c.epoch).where(
    projections.c.name == sa.bindparam("name"))


def load_positions(conn: Connection, consumer: str, topic: str, topic_id: str) -> dict[int, int]:
    rows = conn.execute(_LOAD_POSITIONS,
                        {"consumer": consumer, "topic": topic, "topic_id": topic_id})
    return {p: o for p, o in rows}


def save_positions(
    conn: Connection, consumer: str, topic: str, topic_id: str, offsets: Mapping[int, int]
) -> None:
    if not offsets:
        return
    stmt = _SAVE_POSITIONS.get(conn.dialect.name)
    if stmt is None:
        ins = dialect_insert(conn, positions)
        stmt = _SAVE_POSITIONS[conn.dialect.name] = ins.on_conflict_do_update(
            index_elements=["consumer", "topic", "topic_id", "partition"],
            set_={"offset": ins.excluded.offset},
        )
    conn.execute(
        stmt,
        [{"consumer": consumer, "topic": topic, "topic_id": topic_id, "partition": p,
          "offset": o} for p, o in offsets.items()],
    )


def clear_positions(conn: Connection, consumer: str) -> None:
    conn.execute(sa.delete(positions).where(positions.c.consumer == consumer))


def new_event_ids(conn: Connection, consumer: str, event_ids: Iterable[str]) -> set[str]:
    """Record ``event_ids`` as applied by ``consumer``; return those not seen before."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    seen: set[str] = set()
    for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        chunk = ids[i:i + 500]
        seen.update(conn.execute(
            sa.select(applied.c.event_id).where(
                applied.c.consumer == consumer, applied.c.event_id.in_(chunk))
        ).scalars())
    fresh = [i for i in ids if i not in seen]
    if fresh:
        conn.execute(sa.insert(applied), [{"consumer": consumer, "event_id": i} for i in fresh])
    return set(fresh)


def projection_state(conn: Connection, name: str) -> tuple[int, int] | None:
    """(version, epoch) the tables were built with, or None if never built."""
    row = conn.execute(_STATE, {"name": name}).first()
    return (row[0], row[1]) if row else None


def set_projection_state(conn: Connection, name: str, version: int, epoch: int,
                         rebuilt_at: str | None = None) -> None:
    ins = dialect_insert(conn, projections)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["name"],
            set_={"version": ins.excluded.version, "epoch": ins.excluded.epoch,
                  "rebuilt_at": ins.excluded.rebuilt_at},
        ),
        {"name": name, "version": version, "epoch": epoch, "rebuilt_at": rebuilt_at},
    )
