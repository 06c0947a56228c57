"""The micro-batching publisher against a real broker: coalescing, order, outages, stop."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.config import Settings, Topics
from hub.errors import BrokerError
from hub.log.broker import EmbeddedBroker, free_port
from hub.log.producer import Publisher
from hub.log.topics import ensure_topics

pytestmark = pytest.mark.contract


async def read_back(settings: Settings, topic: str, partitions: int, count: int
                    ) -> dict[int, list[tuple[bytes, bytes]]]:
    """(key, value) per partition, in log order, with a plain consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 30
        while sum(map(len, out.values())) < count and time.monotonic() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition].extend((m.key, m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()


async def test_concurrent_calls_share_batches_and_keep_each_keys_order(make_settings):
    settings = make_settings()
    topic = settings.topics.events
    pub = await Publisher(settings).start()
    try:
        keys = [f"township-1.p-{k}".encode() for k in range(37)]
        calls = [(keys[i % len(keys)], f"{i:04d}".encode()) for i in range(500)]
        await asyncio.gather(*(pub.publish_raw(topic, [(k, v, [("n", v)])]) for k, v in calls))
        stats = pub.stats
    finally:
        await pub.stop()
    assert stats.acknowledged == 500 and stats.failed == 0
    # One produce batch per partition and round, not one per call.
    assert stats.batches <= 100, stats
    got = await read_back(settings, topic, settings.events_partitions, 500)
    assert sum(map(len, got.values())) == 500
    partition_of: dict[bytes, int] = {}
    for p, recs in got.items():
        for k, _ in recs:
            assert partition_of.setdefault(k, p) == p, f"{k!r} on two partitions"
    for key in keys:
        sent = [v for k, v in calls if k == key]
        logged = [v for k, v in got[partition_of[key]] if k == key]
        assert logged == sent, key  # call order, which asyncio.gather starts in list order


async def test_a_call_larger_than_a_batch_spans_rounds_in_order(make_settings):
    settings = make_settings()
    topic = settings.topics.deadletter  # one partition
    pub = await Publisher(settings).start()
    try:
        big = [(b"k", f"{i:05d}".encode() + b"x" * 2000, []) for i in range(600)]  # ~1.2 MB
        small = [(b"k", b"after", [])]
        await asyncio.gather(pub.publish_raw(topic, big), pub.publish_raw(topic, small))
        assert pub.stats.rounds >= 2
    finally:
        await pub.stop()
    got = await read_back(settings, topic, 1, 601)
    assert [v[:5] for _, v in got[0]] == [f"{i:05d}".encode() for i in range(600)] + [b"after"]


def _settings_on(port: int, tmp_path) -> Settings:
    return Settings(kafka_bootstrap=f"127.0.0.1:{port}", data_dir=tmp_path,
                    events_partitions=3, topics=Topics())


async def test_broker_down_fails_fast_and_publishing_resumes_when_it_is_back(tmp_path):
    port = free_port()
    settings = _settings_on(port, tmp_path)
    broker = EmbeddedBroker(port).start()
    try:
        await asyncio.to_thread(ensure_topics, settings)
        pub = await Publisher(settings).start()
        record = [(b"township-1.p-1", b"{}", [])]
        await pub.publish_raw(settings.topics.events, record)
        await asyncio.to_thread(broker.stop)

        # Calls in flight when the outage is noticed, and calls made after it, fail fast.
        started = time.monotonic()
        results = await asyncio.gather(
            *(pub.publish_raw(settings.topics.events, record) for _ in range(20)),
            return_exceptions=True)
        assert all(isinstance(r, BrokerError) for r in results), results
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        with pytest.raises(BrokerError, match="no Kafka broker accepts connections"):
            await pub.publish_raw(settings.topics.events, record)
        assert time.monotonic() - started < 0.1
        assert pub.stats.fast_failures >= 1

        # Same port, new empty log: once the topics exist again, the same publisher works.
        broker = EmbeddedBroker(port).start()
        await asyncio.to_thread(ensure_topics, settings)
        deadline = time.monotonic() + 20
        while True:
            try:
                await pub.publish_raw(settings.topics.events, record)
                break
            except BrokerError:
                assert time.monotonic() < deadline, "publishing did not resume"
                await asyncio.sleep(0.2)
        await asyncio.gather(*(pub.publish_raw(settings.topics.events, record)
                               for _ in range(50)))
        await pub.stop()
    finally:
        broker.stop()


async def test_stop_flushes_what_is_queued_and_never_leaves_a_caller_waiting(make_settings):
    settings = make_settings()
    pub = await Publisher(settings).start()
    calls = [asyncio.create_task(pub.publish_raw(settings.topics.events,
                                                 [(f"k{i}".encode(), b"v", [])]))
             for i in range(200)]
    await asyncio.sleep(0)  # they are queued, not yet acknowledged
    await pub.stop()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1)
    assert all(r is None for r in results), results  # a healthy broker took them all
    with pytest.raises(BrokerError):
        await pub.publish_raw(settings.topics.events, [(b"k", b"v", [])])


async def test_stop_with_the_broker_gone_fails_callers_in_bounded_time(tmp_path):
    port = free_port()
    settings = _settings_on(port, tmp_path)
    with EmbeddedBroker(port) as broker:
        await asyncio.to_thread(ensure_topics, settings)
        pub = await Publisher(settings).start()
        await asyncio.to_thread(broker.stop)
        calls = [asyncio.create_task(pub.publish_raw(settings.topics.events,
                                                     [(b"k", b"v", [])])) for _ in range(10)]
        await asyncio.sleep(0)
        started = time.monotonic()
        await pub.stop()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1)
        assert all(isinstance(r, BrokerError) for r in results), results
        assert time.monotonic() - started < settings.publish_timeout_s + 3
