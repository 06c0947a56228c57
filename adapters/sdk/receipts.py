"""Reading the hub's receipts for one facility (``hie.receipts.v1``), with kafka-python.

The hub keys receipts by facility id, so one partition holds all of a facility's receipts
(Kafka's default partitioner, murmur2, the same in every client). The reader keeps its place
in the outbox file (``scan_marks``), so receipts that arrived while the facility's process was
down are read when it starts again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from hub.engine.receipts import Receipt, parse_receipt, receipt_partition

RECEIPTS_TOPIC = "hie.receipts.v1"


@dataclass(frozen=True, slots=True)
class Batch:
    """Receipts read in one poll, and the offset to resume from after them."""

    receipts: list[Receipt]
    next_offset: int


class ReceiptReader:
    """The facility's receipt partition, read from a stored offset."""

    def __init__(self, bootstrap: str, facility: str, topic: str, timeout_ms: int,
                 client_id: str) -> None:
        self.facility = facility
        self.topic = topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            client_id=client_id, bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 10_000))
        self._tp: TopicPartition | None = None

    def locate(self) -> int:
        """The facility's partition of the receipts topic."""
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            raise KafkaTimeoutError(f"the hub's broker has no topic {self.topic}: is the hub "
                                    "running, and does it send receipts?")
        self._tp = TopicPartition(self.topic, receipt_partition(self.facility, len(parts)))
        return self._tp.partition

    def start_at(self, mark: int | None, timeout_ms: int) -> int:
        """Read from ``mark`` (None: from the end, as on first contact, when nothing sent
        earlier can be waiting). A mark beyond the end means the log was replaced (a bundled
        broker restarted empty): read it from the start. Returns the offset reading starts
        at."""
        assert self._tp is not None
        begin = self._consumer.beginning_offsets([self._tp], timeout_ms)[self._tp]
        end = self._consumer.end_offsets([self._tp], timeout_ms)[self._tp]
        start = end if mark is None else (begin if mark > end else max(mark, begin))
        self._consumer.assign([self._tp])
        self._consumer.seek(self._tp, start)
        return start

    @property
    def partition(self) -> int:
        assert self._tp is not None
        return self._tp.partition

    def poll(self, wait_ms: int) -> Batch | None:
        """Receipts for this facility that arrived (None when nothing new)."""
        assert self._tp is not None
        polled = self._consumer.poll(timeout_ms=wait_ms, max_records=5000)
        records = polled.get(self._tp, [])
        if not records:
            return None
        return Batch(list(_mine(records, self.facility)), records[-1].offset + 1)

    def close(self) -> None:
        with contextlib.suppress(KafkaError):  # closing a consumer whose broker is gone
            self._consumer.close()


def _mine(records: list, facility: str) -> Iterator[Receipt]:
    for rec in records:
        receipt = parse_receipt(rec.value)
        # Other facilities hash to the same partition; their receipts are not ours.
        if receipt is not None and receipt.facility == facility:
            yield receipt
