"""Which second copies of an inbound event id are refused, on every store."""

from __future__ import annotations

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.envelope import new_event
from hub.ingest.replay import replays
from hub.signing import demo_signer
from hub.store.schema import journal


def journal_row(store, event_id: str, signature: str) -> None:
    with store.begin() as conn:
        conn.execute(dialect_insert(conn, journal).values(
            event_id=event_id, source="urn:hie:facility:village-1", type="t", subject="s",
            time="2026-01-01T00:00:00Z", key="k", signature=signature, data=b"{}",
            topic="in", topic_id="old", partition=0, offset=0))


def test_redelivery_copy_loss_and_replay_are_told_apart(store):
    first = replays(store, [("e1", "old", 0, 5), ("e2", "old", 0, 6), ("e3", "old", 0, 7)],
                    ["sig-1", "sig-2", "sig-3"])
    assert (first.replays, first.duplicates) == (set(), set())
    # The same records again (a crash before the inbound commit): re-deliveries.
    again = replays(store, [("e1", "old", 0, 5), ("e2", "old", 0, 6)], ["sig-1", "sig-2"])
    assert (again.replays, again.duplicates) == (set(), set())

    journal_row(store, "e1", "sig-1")
    journal_row(store, "e2", "sig-2")
    # On a new log (the broker restarted empty): e1 sent again as it was -> a duplicate,
    # answered with a receipt; e2 under the same id with another signature -> a replay; e3
    # never reached the journal and its log is gone -> the new copy takes the id over.
    later = replays(store, [("e1", "new", 1, 0), ("e2", "new", 1, 1), ("e3", "new", 1, 2)],
                    ["sig-1", "forged", "sig-3"])
    assert (later.replays, later.duplicates) == ({1}, {0})
    # e3's claim moved: reading that record again is a re-delivery, an older copy a replay.
    assert replays(store, [("e3", "new", 1, 2)], ["sig-3"]).replays == set()
    assert replays(store, [("e3", "new", 1, 9)], ["sig-3"]).replays == {0}


def test_the_journal_keeps_a_batch_members_signature_whole(store):
    """A member of a signed batch carries its Merkle path (~440 characters at 100 events):
    the journal must keep it whole for `hub verify` to check the event alone later; a
    PostgreSQL journal made before batch signatures (varchar(200)) is widened on start."""
    if store.dialect == "postgresql":
        with store.begin() as conn:
            conn.execute(sa.text(
                "ALTER TABLE hub_journal ALTER COLUMN signature TYPE varchar(200)"))
        store.create_hub_tables()
    signed = demo_signer("village-1").sign_batch([new_event(
        "village-1", "Patient", f"p{i}", f"village-1.p{i}", b"{}") for i in range(100)])
    assert len(signed[37].signature) > 400
    journal_row(store, "e-batch", signed[37].signature)
    with store.connect() as conn:
        kept = conn.execute(sa.select(journal.c.signature)
                            .where(journal.c.event_id == "e-batch")).scalar_one()
    assert kept == signed[37].signature


def test_one_id_twice_in_a_batch_is_a_replay_the_second_time(store):
    found = replays(store, [("e1", "t", 0, 1), ("e2", "t", 0, 2), ("e1", "t", 0, 3)],
                    ["sig-1", "sig-2", "sig-1b"])
    assert (found.replays, found.duplicates) == ({2}, set())
    # Read again after a crash: the first copy is a re-delivery, the second still a replay.
    again = replays(store, [("e1", "t", 0, 1), ("e2", "t", 0, 2), ("e1", "t", 0, 3)],
                    ["sig-1", "sig-2", "sig-1b"])
    assert (again.replays, again.duplicates) == ({2}, set())
