"""Where each projection stands: its position in the log, lag, last error, and the rule
that turns a stalled one into an alert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from hub.store.db import Store
from hub.store.schema import dead_letters, positions

STALL_SECONDS = 60.0  # events waiting and nothing applied for this long: an alert


def alert(runner: dict[str, Any], stall_seconds: float = STALL_SECONDS) -> str | None:
    """Why a runner (see ``Hub.runner_states``) needs a person, or None.

    A runner that is not running (stopped, restarting) needs one whatever its lag; a running
    one with events waiting that has committed nothing for ``stall_seconds`` is stalled.
    A runner with no lag and no commit for a long time is simply idle.
    """
    if runner["component"] not in ("running", "done"):
        return f"{runner['name']} is {runner['component']}"
    idle = runner.get("idle_seconds")
    if runner["lag"] > 0 and (idle is None or idle > stall_seconds):
        since = "since it started" if idle is None else f"for {idle:.0f} s"
        return (f"{runner['name']} is stalled: {runner['lag']} events waiting and nothing "
                f"applied {since}")
    return None


def stored_positions(store: Store) -> dict[str, int]:
    """Per projection, the sum over partitions of the last offset it committed (what
    survives a restart; with the runner's lag it says how far through the log it is)."""
    q = (sa.select(positions.c.consumer, sa.func.sum(positions.c.offset + 1))
         .where(positions.c.consumer.like("projection:%")).group_by(positions.c.consumer))
    with store.connect() as conn:
        return {c.removeprefix("projection:"): int(n or 0) for c, n in conn.execute(q)}


def last_errors(store: Store) -> dict[str, dict[str, str]]:
    """Per projection, its newest dead letter (an event it gave up on after retries)."""
    t = dead_letters
    newest = (sa.select(t.c.entry, sa.func.max(t.c.seq).label("seq"))
              .where(t.c.entry.like("projection:%")).group_by(t.c.entry).subquery())
    q = sa.select(t.c.entry, t.c.refused_at, t.c.reason, t.c.detail, t.c.id).join(
        newest, t.c.seq == newest.c.seq)
    with store.connect() as conn:
        return {r.entry.removeprefix("projection:"):
                {"at": r.refused_at, "reason": r.reason, "detail": r.detail[:300], "id": r.id}
                for r in conn.execute(q)}


def projection_rows(store: Store, runners: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per projection: stored position, the running runner's figures, last error,
    and its alert."""
    stored = stored_positions(store)
    errors = last_errors(store)
    by_name = {r["name"]: r for r in runners}
    out = []
    for name in sorted(set(stored) | set(by_name)):
        run = by_name.get(name)
        out.append({"name": name, "position": stored.get(name, 0),
                    "lag": run["lag"] if run else None,
                    "applied": run["applied"] if run else None,
                    "idle_seconds": run["idle_seconds"] if run else None,
                    "state": run["component"] if run else "not in this process",
                    "last_error": errors.get(name),
                    "alert": alert(run) if run else None})
    return out
