"""Dead letters: the original bytes, untouched, plus headers saying what went wrong.

Nothing is lost: a dead letter carries the record exactly as it arrived, so an operator can
fix the cause and re-publish it. ``hub_error_outcome`` holds the OperationOutcome JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from hub.envelope import now_rfc3339

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def dead_letter(
    stage: str,
    reason: str,
    value: bytes,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
    outcome: dict | None = None,
    origin: tuple[str, int, int] | None = None,
) -> Record:
    """A record for ``hie.deadletter.v1``; ``stage`` is where it failed (gateway, ingest...)."""
    out = [(n, v) for n, v in headers if not n.startswith("hub_error_")]
    out += [
        ("hub_error_stage", stage.encode()),
        ("hub_error_reason", reason[:2000].encode()),
        ("hub_error_time", now_rfc3339().encode()),
    ]
    if outcome is not None:
        out.append(("hub_error_outcome", orjson.dumps(outcome)))
    if origin is not None:
        topic, partition, offset = origin
        out.append(("hub_error_origin", f"{topic}/{partition}/{offset}".encode()))
    return key, value, out
