"""A facility process publishing through the SDK's outbox, run as its own process so a test
can kill it with SIGKILL: ``python -m tests.support.outbox_publisher BOOTSTRAP TOPIC OUTBOX
TOTAL [FLUSH_SECONDS [CONFIRM]]`` (CONFIRM: ``broker``, the default here, or ``journal``).

It continues where the outbox says the last run stopped (the broker is down, so every event
published so far is still stored), prints each published index on its own line, then
flushes for FLUSH_SECONDS and prints ``pending N``.
"""

from __future__ import annotations

import sys

from adapters.sdk import FacilityPublisher
from hub.signing import demo_signer
from tests.support.resources import observation

FACILITY = "village-1"
PATIENTS = 10


def event(i: int) -> dict:
    """Event ``i``: an Observation of patient ``p<i mod 10>`` whose value is ``i``, so the
    order of a patient's events can be read back from the topic."""
    return observation(f"o-{i:04d}", pid=f"p{i % PATIENTS}", value=float(i))


def main(bootstrap: str, topic: str, outbox: str, total: int, flush_s: float = 0.0,
         confirm: str = "broker") -> None:
    pub = FacilityPublisher(bootstrap, demo_signer(FACILITY), topic=topic, outbox=outbox,
                            max_block_ms=300, connect_timeout_ms=300, confirm=confirm)
    start = pub.pending
    for i in range(start, total):
        pub.publish(event(i))
        print(i, flush=True)
    result = pub.flush(flush_s)
    print(f"pending {result.pending}", flush=True)
    pub.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
         float(sys.argv[5]) if len(sys.argv) > 5 else 0.0,
         sys.argv[6] if len(sys.argv) > 6 else "broker")
