"""A lease in SQL: one hub process at a time holds a single-writer role.

With several replicas (one consumer group, one PostgreSQL), every replica runs the
projections, but the patient index must have one writer, or two replicas would decide the
same record differently. Whoever holds the lease decides; it renews the lease as it works,
and another replica takes over once the lease has expired (the holder died or stalled).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import leases

_replica_name = ""


def name_this_replica(name: str) -> None:
    """The name holders in this process start with (``HUB_REPLICA_NAME``); empty: the host's."""
    global _replica_name
    _replica_name = name


def holder_name(role: str) -> str:
    """A holder name for one contender: the replica, the pid and a random part. The random
    part keeps contenders apart where replicas share a host name and a pid (containers on
    the host's network each run the hub as their pid 1), or live in one process (tests)."""
    return f"{_replica_name or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}:{role}"


def acquire(store: Store, name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; True if ``holder`` now holds it."""
    now = time.time()
    with store.begin() as conn:
        conn.execute(dialect_insert(conn, leases).on_conflict_do_nothing(
            index_elements=["name"]), [{"name": name, "holder": holder, "expires": now + ttl}])
        # One statement: two contenders cannot both see the lease as free.
        taken = conn.execute(
            sa.update(leases).where(leases.c.name == name, sa.or_(
                leases.c.holder == holder, leases.c.expires < now))
            .values(holder=holder, expires=now + ttl))
        return taken.rowcount == 1


def holder_of(store: Store, name: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(sa.select(leases.c.holder).where(
            leases.c.name == name, leases.c.expires >= time.time())).scalar()


def release(store: Store, name: str, holder: str) -> None:
    with store.begin() as conn:
        conn.execute(sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder))
