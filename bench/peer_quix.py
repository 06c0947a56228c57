"""quixstreams folding the events topic into the shared record (``hub bench --peers``).

Run by bench.peers with the interpreter of quixstreams' own environment (its pins exclude
the hub's pydantic): ``python bench/peer_quix.py BOOTSTRAP TOPIC COUNT BATCH DB SECRET_HEX``.
A StreamingDataFrame reads the topic in a consumer group, folds each record (its
CloudEvents headers and resource) into a ``record_resources`` row with bench.peer_fold,
and a BatchingSink writes the rows at each checkpoint with the hub's guarded upsert, in one
SQLite transaction per partition; quixstreams then commits the offsets to Kafka
(at-least-once: a replay after a crash re-applies rows the guard keeps the newest of).
Prints one JSON line: when each checkpoint's writes committed and how many rows they held.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: its own folder (bench/, whose module names could shadow a library's)
# leaves the path, the folder holding the hub's packages joins it last, behind
# quixstreams' environment.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.append(str(_here.parent))

import json  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from quixstreams import Application  # noqa: E402
from quixstreams.sinks import BatchingSink, SinkBatch  # noqa: E402

from bench.peer_fold import UPSERT, record_row  # noqa: E402
from hub.identity import use_identity_secret  # noqa: E402


class RecordSink(BatchingSink):
    def __init__(self, db: str) -> None:
        super().__init__()
        self.conn = sqlite3.connect(db, isolation_level=None)
        # As the hub's store sets SQLite (hub.store.db).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536",
                       "temp_store=MEMORY"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.checkpoints: list[tuple[float, int]] = []

    def write(self, batch: SinkBatch) -> None:
        rows = [item.value for item in batch if item.value is not None]
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(UPSERT, rows)
        self.conn.execute("COMMIT")

    def flush(self) -> None:
        """A checkpoint: every partition's batch written (then the offsets committed)."""
        size = sum(b.size for b in self._batches.values())
        super().flush()
        if size:
            self.checkpoints.append((time.perf_counter(), size))


def fold(value: bytes, key: bytes | None, _timestamp: int, headers) -> tuple | None:
    h = {name: raw.decode() for name, raw in headers or ()}
    return record_row(h["ce_id"], h["ce_source"], h["ce_type"], h["ce_subject"], h["ce_time"],
                      (key or b"").decode(errors="replace"), value)


def main(bootstrap: str, topic_name: str, count: int, batch: int, db: str,
         secret: str) -> None:
    use_identity_secret(bytes.fromhex(secret))
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state:
        app = Application(
            broker_address=bootstrap, consumer_group=f"peer-quix-{time.time_ns()}",
            auto_offset_reset="earliest", state_dir=state, use_changelog_topics=False,
            # A checkpoint (sink write, offset commit) per batch of the hub's size.
            commit_every=batch, commit_interval=1.0, loglevel="WARNING",
            # The hub's group session settings (a first join then takes ~3 s, not ~25).
            consumer_extra_config={"session.timeout.ms": 6000,
                                   "heartbeat.interval.ms": 1000})
        topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")
        sink = RecordSink(db)
        sdf = app.dataframe(topic)
        sdf = sdf.apply(fold, metadata=True)
        sdf.sink(sink)
        app.run(count=count, timeout=120, collect=False)
    print(json.dumps({"commits": sink.checkpoints}))


if __name__ == "__main__":
    bootstrap, topic_name, count, batch, db, secret = sys.argv[1:7]
    main(bootstrap, topic_name, int(count), int(batch), db, secret)
