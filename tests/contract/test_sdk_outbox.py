"""The facility SDK's outbox on a real broker: a link down for the whole publishing run, a
facility process killed mid-way, a crash between the broker's ack and its recording, and the
outbox's bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from adapters.sdk import FacilityPublisher
from adapters.sdk.outbox import Outbox, OutboxError, OutboxFull
from hub.config import Topics
from hub.envelope import header_value
from hub.log.broker import EmbeddedBroker, free_port
from hub.signing import demo_signer
from tests.support.events import ingest
from tests.support.outbox_publisher import FACILITY, PATIENTS, event

pytestmark = [pytest.mark.contract]
ROOT = Path(__file__).resolve().parents[2]


def topics() -> Topics:
    tag = uuid.uuid4().hex[:8]
    return Topics(inbound=f"o{tag}.inbound", events=f"o{tag}.events",
                  deadletter=f"o{tag}.deadletter", lab=f"o{tag}.lab", imaging=f"o{tag}.imaging",
                  recognition=f"o{tag}.recognition", receipts=f"o{tag}.receipts")


def facility_process(bootstrap: str, topic: str, outbox: Path, total: int,
                     flush_s: float = 0.0, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.outbox_publisher", bootstrap, topic,
         str(outbox), str(total), str(flush_s)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)


def records_on(bootstrap: str, topic: str) -> list[tuple[int, int, str, str, dict]]:
    """Every record of ``topic``: (partition, offset, key, event id, resource)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out += [(tp.partition, r.offset, r.key.decode(),
                         header_value(r.headers, "ce_id"), orjson.loads(r.value))
                        for r in recs]
        return out
    finally:
        consumer.close()



def assert_once_in_order(records: list, total: int) -> None:
    ids = [r[3] for r in records]
    assert len(ids) == len(set(ids)) == total, "every event exactly once, by event id"
    assert sorted(r[4]["id"] for r in records) == [f"o-{i:04d}" for i in range(total)]
    by_key: dict[str, list[tuple[int, int, float]]] = {}
    for part, offset, key, _, res in records:
        by_key.setdefault(key, []).append((part, offset, res["valueQuantity"]["value"]))
    assert len(by_key) == min(PATIENTS, total)
    for key, seen in by_key.items():
        assert len({p for p, _, _ in seen}) == 1, f"{key} spread over partitions"
        values = [v for _, _, v in sorted(seen)]
        assert values == sorted(values), f"{key}'s events out of order"


async def test_a_day_offline_and_a_restart_lose_nothing_and_send_nothing_twice(
        make_settings, tmp_path):
    """1,000 events published while the broker is down, the facility process SIGKILLed
    half-way and restarted on the same outbox; then the broker comes up and one flush sends
    them all, once each, in order per patient; the ingest stage accepts every one."""
    port, total = free_port(), 1000
    bootstrap, t, outbox = f"127.0.0.1:{port}", topics(), tmp_path / "outbox.db"

    first = facility_process(bootstrap, t.inbound, outbox, total)
    assert first.stdout is not None
    for line in first.stdout:
        if int(line) >= total // 2:
            break
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert first.returncode == -signal.SIGKILL

    second = facility_process(bootstrap, t.inbound, outbox, total, flush_s=0.5)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0
    assert out.split()[:1] != [str(0)], "the second process continues, it does not restart"
    assert out.strip().endswith(f"pending {total}")  # broker still down: all kept

    with EmbeddedBroker(port):
        settings = make_settings(kafka_bootstrap=bootstrap, topics=t)
        pub = FacilityPublisher(bootstrap, demo_signer(FACILITY), topic=t.inbound,
                                outbox=outbox, confirm="broker")
        result = pub.flush(30)
        pub.close()
        assert (result.pending, result.sent) == (0, total), result.message
        assert_once_in_order(records_on(bootstrap, t.inbound), total)
        accepted, refused, dead = await ingest(settings, tmp_path)
    assert (accepted, refused) == (total, 0)
    assert not [d for d in dead if d["reason"].startswith("replayed")]
    assert dead == []


async def test_a_crash_after_the_ack_does_not_send_the_event_again(make_settings, tmp_path):
    """The facility process dies after the broker acknowledged a chunk and before the outbox
    recorded it. The next run finds those events on the topic instead of resending them, so
    the hub sees no replay."""
    settings = make_settings()
    outbox, total = tmp_path / "outbox.db", 60
    proc = facility_process(settings.bootstrap, settings.topics.inbound, outbox, total,
                            flush_s=20, HUB_CRASH_AT="sdk_outbox_before_ack_recorded:1")
    proc.communicate(timeout=60)
    assert proc.returncode == 137  # killed at the crash point, like kill -9
    left = Outbox(outbox)
    unacked = len(left.handed())
    left.close()
    assert unacked > 0  # acknowledged by the broker, not recorded

    pub = FacilityPublisher(settings.bootstrap, demo_signer(FACILITY),
                            topic=settings.topics.inbound, outbox=outbox, confirm="broker")
    pub.publish_many([event(i) for i in range(pub.pending, total)])  # finish the run
    result = pub.flush(20)
    pub.close()
    assert result.pending == 0, result.message
    assert_once_in_order(records_on(settings.bootstrap, settings.topics.inbound), total)
    accepted, refused, dead = await ingest(settings, tmp_path)
    assert (accepted, refused, dead) == (total, 0, [])


def test_a_full_outbox_refuses_clearly_and_keeps_what_it_has(make_settings, tmp_path):
    settings = make_settings()
    outbox = tmp_path / "outbox.db"
    down = f"127.0.0.1:{free_port()}"
    pub = FacilityPublisher(down, demo_signer(FACILITY), topic=settings.topics.inbound,
                            outbox=outbox, outbox_max_rows=10, max_block_ms=200,
                            connect_timeout_ms=200)
    ids = [pub.publish(event(i)) for i in range(8)]
    with pytest.raises(OutboxFull, match=r"full: it holds 8 unsent events .* Nothing was "
                                         r"dropped; these events were not stored"):
        pub.publish_many([event(i) for i in range(8, 11)])  # all or none: none
    ids += pub.publish_many([event(8), event(9)])
    with pytest.raises(OutboxFull):
        pub.publish(event(10))
    assert pub.pending == 10
    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox(outbox)  # one publisher per outbox: two would send events twice
    result = pub.flush(0.5)
    assert (result.pending, result.ok) == (10, False)
    assert "10 events still pending" in result.message and "does not answer" in result.message
    pub.close()

    # Bounded by bytes too.
    small = FacilityPublisher(down, demo_signer(FACILITY), outbox=tmp_path / "small.db",
                              outbox_max_bytes=1500, max_block_ms=200, connect_timeout_ms=200)
    small.publish(event(0))
    with pytest.raises(OutboxFull, match="1500 bytes"):
        small.publish(event(1))
    small.close()

    # The link is back (here: the facility is pointed at a broker that answers).
    pub = FacilityPublisher(settings.bootstrap, demo_signer(FACILITY),
                            topic=settings.topics.inbound, outbox=outbox, confirm="broker")
    assert pub.flush(20).ok
    pub.close()
    records = records_on(settings.bootstrap, settings.topics.inbound)
    assert sorted(r[3] for r in records) == sorted(ids)
