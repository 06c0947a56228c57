"""A facility's flush() is a promise with the bundled broker too: the SDK keeps each event in
its outbox until the hub's receipt says the SQL journal has it. Real broker processes (one
killed with SIGKILL and started again empty), a real hub, a real outbox file."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from adapters.sdk import FacilityPublisher, build_envelope
from hub.deadletters.read import list_dead_letters
from hub.log.broker import EmbeddedBroker, free_port
from hub.service import Hub
from hub.signing import demo_signer
from hub.store.db import open_store
from hub.store.schema import journal
from tests.e2e.test_hl7_mllp import send_all
from tests.support.hl7_messages import oru
from tests.support.hub_server import eventually, mllp_listener, running_hub
from tests.support.outbox_publisher import FACILITY, event

pytestmark = [pytest.mark.e2e]


def journaled(db_url: str) -> list[str]:
    store = open_store(db_url)
    try:
        with store.connect() as conn:
            return list(conn.execute(sa.select(journal.c.event_id)).scalars())
    finally:
        store.dispose()


async def test_flush_waits_for_the_journal_and_survives_a_broker_restart(make_settings,
                                                                         tmp_path):
    """200 events reach a broker while no hub runs: flush() keeps them pending. The broker is
    killed (its memory-only log is gone) and restarted empty, the hub starts: the next
    flush() sends them again, and returns pending 0 only once every one is journaled, once.
    A refused event comes back in the receipts with its reason; a copy of a journaled event
    is answered with a receipt, not a second append or a dead letter."""
    port, total = free_port(), 200
    outbox = tmp_path / "outbox.db"
    with EmbeddedBroker(port, tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap)
        pub = FacilityPublisher(broker.bootstrap, demo_signer(FACILITY),
                                topic=settings.topics.inbound, outbox=outbox,
                                receipts_topic=settings.topics.receipts,
                                max_block_ms=1000, connect_timeout_ms=1000)
        ids = pub.publish_many([event(i) for i in range(total)])
        result = await asyncio.to_thread(pub.flush, 3)
        assert result.pending == total and not result.ok, result.message
        assert "waiting for the hub's receipt" in result.message
        assert "0 not yet on the broker" in result.message  # the broker has them all

        broker.kill()  # SIGKILL: the broker's log, in memory, is gone
        await asyncio.sleep(0.5)
        broker.start()
        async with running_hub(settings) as (hub, _base):
            result = await asyncio.to_thread(pub.flush, 60)
            assert (result.pending, result.ok) == (0, True), result.message
            assert "journaled by the hub" in result.message
            # Nothing the hub has not journaled left the outbox; nothing went in twice.
            kept = journaled(settings.db_url)
            assert sorted(set(kept) & set(ids)) == sorted(ids)
            assert len(kept) == len(set(kept))

            # A refusal is answered too, with its reason, and kept in the outbox file.
            bad = {k: v for k, v in event(total).items() if k != "status"}
            bad_id = pub.publish(bad)
            result = await asyncio.to_thread(pub.flush, 30)
            assert result.pending == 0, result.message
            assert [i for i, _ in result.refused] == [bad_id]
            assert result.refused[0][1].startswith("invalid-resource")
            assert [r[0] for r in pub.refusals()] == [bad_id]

            # The same signed event again (a receipt that got lost): a receipt, no append.
            again = FacilityPublisher(broker.bootstrap, demo_signer(FACILITY),
                                      topic=settings.topics.inbound,
                                      outbox=tmp_path / "again.db",
                                      receipts_topic=settings.topics.receipts)
            env = build_envelope(demo_signer(FACILITY), event(0))
            first = again.publish_raw(env.key.encode(), env.data, env.headers())
            assert (await asyncio.to_thread(again.flush, 30)).ok
            second = again.publish_raw(env.key.encode(), env.data, env.headers())
            assert first == second == env.id
            result = await asyncio.to_thread(again.flush, 30)
            again.close()
            assert result.ok and not result.refused, result.message
            assert journaled(settings.db_url).count(env.id) == 1
            letters = list_dead_letters(hub.store, limit=50)
            assert [d.reason for d in letters] == ["invalid-resource"]
        pub.close()


async def test_mllp_answers_aa_only_once_the_journal_has_the_message(make_settings, tmp_path):
    """No hub reads the inbound topic yet: the listener cannot get a receipt, so it answers
    AE ("send it again"), never AA. With the hub running, the same message is AA'd, and by
    then every event of it is in the journal."""
    with EmbeddedBroker(free_port(), tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, ack_timeout_s=2.0)
        async with Hub(settings, start_broker=False) as alone:  # no ingest, no journal
            async with mllp_listener(settings, alone) as server:
                reply, = await asyncio.to_thread(send_all, server.port, [oru().encode()])
            assert str(reply.segment("MSA")[1]) == "AE"
            assert "did not confirm within 2 s" in str(reply.segment("MSA")[3])
        async with running_hub(settings) as (hub, _base):
            async with mllp_listener(settings, hub) as server:
                before = set(journaled(settings.db_url))
                reply, = await asyncio.to_thread(send_all, server.port,
                                                 [oru(control="ORU2").encode()])
                after = set(journaled(settings.db_url))
            assert str(reply.segment("MSA")[1]) == "AA", str(reply)
            # The ORU's Patient, DiagnosticReport and four Observations, journaled already.
            assert len(after - before) >= 6


async def test_mllp_rides_out_a_broker_restart(make_settings, tmp_path):
    """The broker dies under a running listener: the next message is answered AE within
    seconds (never AA, never silence); once the broker is back (empty) and the hub has
    re-created its topics, messages are AA'd again without restarting the listener."""
    with EmbeddedBroker(free_port(), tmp_path / "broker.log") as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, ack_timeout_s=5.0)
        async with running_hub(settings) as (hub, _base), mllp_listener(settings, hub) as server:
            first, = await asyncio.to_thread(send_all, server.port, [oru().encode()])
            assert str(first.segment("MSA")[1]) == "AA"
            broker.kill()
            started = asyncio.get_running_loop().time()
            down, = await asyncio.to_thread(send_all, server.port,
                                            [oru(control="ORU2").encode()])
            assert str(down.segment("MSA")[1]) == "AE"
            assert asyncio.get_running_loop().time() - started < 8
            broker.start()

            async def accepted_again() -> bool:
                reply, = await asyncio.to_thread(send_all, server.port,
                                                 [oru(control="ORU3").encode()])
                return str(reply.segment("MSA")[1]) == "AA"

            await eventually(accepted_again, 60)


async def test_a_stopping_listener_answers_the_message_it_has_taken(make_settings):
    """The listener is stopped while a message waits for its receipt (no hub journals yet):
    it takes no new connection but still answers that message (here AE, once the wait for
    the receipt runs out) instead of hanging up on the LIS."""
    settings = make_settings(ack_timeout_s=2.0)
    async with Hub(settings, start_broker=False) as alone, \
            mllp_listener(settings, alone) as server:
        pending = asyncio.create_task(
            asyncio.to_thread(send_all, server.port, [oru(control="LATE").encode()]))
        await eventually(lambda: _busy(server), 10)
        await server.stop()
        reply, = await pending
        assert str(reply.segment("MSA")[1]) == "AE"
        assert str(reply.segment("MSA")[2]) == "LATE"
        with pytest.raises(OSError):
            await asyncio.to_thread(send_all, server.port, [oru().encode()])


async def _busy(server) -> bool:
    return server._busy > 0
