"""Publishing envelopes with bounded in-flight sends; a call returns once Kafka acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from hub import clock
from hub.config import Settings
from hub.envelope import Envelope
from hub.errors import BrokerError


class CachedPartitioner:
    """Kafka's default partitioner (murmur2, as Java clients use) with a cache per key.

    aiokafka's murmur2 is pure Python; one patient key recurs across that patient's events,
    so remembering the answer takes the hash off the gateway's hot path.
    """

    def __init__(self, size: int = 65536) -> None:
        self._default = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}
        self._size = size

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]
                 ) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        k = (key, len(all_partitions))
        found = self._cache.get(k)
        if found is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            found = self._cache[k] = self._default(key, all_partitions, available)
        return found


class Publisher:
    """One aiokafka producer shared by a process (acks=all; idempotence per settings)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = CachedPartitioner()

    async def start(self) -> Publisher:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=self.settings.enable_idempotence,
            linger_ms=2,
            max_batch_size=256 * 1024,
            max_request_size=16 * 1024 * 1024,
            request_timeout_ms=int(self.settings.publish_timeout_s * 1000),
            client_id="hub",
            partitioner=self._partitioner,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self.stop()  # it holds a connection attempt and a task even when failed
            raise BrokerError(
                f"no Kafka broker answered the producer at {self.settings.bootstrap} ({exc}); "
                "is it running, and is --kafka / HUB_KAFKA_BOOTSTRAP right?") from exc
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        """Send all envelopes concurrently and wait until every one is acknowledged.

        Raises BrokerError if any send fails; some of the others may then be in the log,
        which is safe because consumers drop events whose id they already applied.
        """
        await self.publish_raw(
            topic, [(e.key.encode(), e.data, e.headers()) for e in envelopes]
        )

    async def publish_raw(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Send records, one batch per partition, and wait until all are acknowledged.

        Batching ourselves (rather than one ``send()`` per record) keeps aiokafka's per-record
        Python work off the hot path; records keep their order within a partition.
        """
        if self._producer is None:
            raise BrokerError("publisher is not started")
        if not records:
            return
        producer = self._producer
        try:
            partitions = sorted(await producer.partitions_for(topic))
            by_partition: dict[int, list] = {}
            for rec in records:
                p = self._partitioner(rec[0], partitions, partitions)
                by_partition.setdefault(p, []).append(rec)
            futures = []
            stamp = int(clock.now().timestamp() * 1000)  # the clock the registry uses
            for p, recs in by_partition.items():
                batch = producer.create_batch()
                for key, value, headers in recs:
                    if batch.append(key=key, value=value, timestamp=stamp,
                                    headers=headers) is not None:
                        continue
                    batch.close()
                    if batch.record_count():
                        futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=stamp,
                                    headers=headers) is None:
                        # Larger than a whole batch: aiokafka sizes a batch for it.
                        futures.append(await producer.send(topic, value=value, key=key,
                                                           headers=headers, partition=p,
                                                           timestamp_ms=stamp))
                batch.close()
                if batch.record_count():
                    futures.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerError(f"publishing to {topic} failed: {exc}") from exc
