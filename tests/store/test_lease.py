"""The single-writer lease, on SQLite and PostgreSQL: one holder at a time, taken over only
after it expires."""

from __future__ import annotations

import threading
import time

from hub.store import lease


def test_one_holder_until_the_lease_expires(store):
    assert lease.acquire(store, "role", "a", ttl=0.5)
    assert not lease.acquire(store, "role", "b", ttl=0.5)
    assert lease.acquire(store, "role", "a", ttl=0.5)  # renewal
    assert lease.holder_of(store, "role") == "a"
    time.sleep(0.7)
    assert lease.holder_of(store, "role") is None
    assert lease.acquire(store, "role", "b", ttl=5)
    assert not lease.acquire(store, "role", "a", ttl=5)  # the old holder has lost it
    lease.release(store, "role", "b")
    assert lease.acquire(store, "role", "a", ttl=5)


def test_contenders_never_both_win(store):
    wins: list[str] = []
    start = threading.Barrier(4)

    def contend(name: str) -> None:
        start.wait()
        if lease.acquire(store, "race", name, ttl=30):
            wins.append(name)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_replicas_sharing_a_host_name_and_pid_are_still_told_apart(store):
    # Containers on the host's network: one host name, and the hub is pid 1 in each.
    lease.name_this_replica("projections-2")
    try:
        first, second = lease.holder_name("mpi"), lease.holder_name("mpi")
    finally:
        lease.name_this_replica("")
    assert first.startswith("projections-2:") and second.startswith("projections-2:")
    assert lease.acquire(store, "mpi-writer", first, ttl=30)
    assert not lease.acquire(store, "mpi-writer", second, ttl=30)
    assert lease.holder_of(store, "mpi-writer") == first
