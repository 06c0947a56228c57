"""Dead letters in SQL (``hub_dead_letters``): written once, never changed but for the
``published`` flag. Both functions are idempotent, so a caller may simply do them again."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.deadletters.letter import DeadLetter, headers_json
from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import dead_letters

_CHUNK = 900  # ids per IN (...): under every driver's bind-parameter limit


def row(letter: DeadLetter, published: bool) -> dict:
    return {
        "id": letter.id, "refused_at": letter.refused_at, "entry": letter.entry,
        "reason": letter.reason, "detail": letter.detail, "facility": letter.facility,
        "event_id": letter.event_id, "resource_type": letter.resource_type,
        "subject": letter.subject, "patient_key": letter.patient_key,
        "outcome": orjson.dumps(letter.outcome).decode() if letter.outcome else None,
        "original": letter.original, "original_key": letter.key,
        "original_headers": headers_json(letter.headers), "origin": letter.origin,
        "published": published,
    }


def insert(conn: Connection, letters: Sequence[DeadLetter], published: bool = False) -> None:
    """Add ``letters`` inside the caller's transaction; a letter whose id is already there
    (the same inbound record handled again) is left as it was."""
    if not letters:
        return
    conn.execute(dialect_insert(conn, dead_letters).on_conflict_do_nothing(
        index_elements=["id"]), [row(x, published) for x in letters])


def keep(store: Store, letters: Sequence[DeadLetter], published: bool = False) -> None:
    """Commit ``letters`` in one transaction of their own (StoreError if that fails)."""
    if letters:
        with store.begin() as conn:
            insert(conn, letters, published)


def mark_published(store: Store, ids: Sequence[str]) -> None:
    with store.begin() as conn:
        for i in range(0, len(ids), _CHUNK):
            conn.execute(sa.update(dead_letters).where(
                dead_letters.c.id.in_(ids[i:i + _CHUNK])).values(published=True))
