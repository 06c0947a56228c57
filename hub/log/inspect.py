"""Reading topics without a consumer group (operators' views; no offsets are committed)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hub.config import Settings
from hub.envelope import header_value
from hub.errors import BrokerError


async def read_deadletters(settings: Settings, limit: int) -> list[dict]:
    topic = settings.topics.deadletter
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerError(f"no Kafka broker answered at {settings.bootstrap} ({exc}); is it "
                          "running, and is --kafka / HUB_KAFKA_BOOTSTRAP right?") from exc
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - limit))
        rows: list[dict] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                break
            for msgs in batch.values():
                for m in msgs:
                    rows.append({
                        "offset": m.offset,
                        "stage": header_value(m.headers, "hub_error_stage") or "",
                        "reason": header_value(m.headers, "hub_error_reason") or "",
                        "time": header_value(m.headers, "hub_error_time") or "",
                        "outcome": header_value(m.headers, "hub_error_outcome"),
                        "value": m.value,
                    })
        return rows[-limit:]
    finally:
        await consumer.stop()
