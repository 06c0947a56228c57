"""Fault injection for crash tests: ``HUB_CRASH_AT=stage:N`` kills the process at the Nth
visit to ``stage``, exactly as ``kill -9`` would (no cleanup, no flush)."""

from __future__ import annotations

import os

_visits: dict[str, int] = {}


def crashpoint(spec: str | None, stage: str) -> None:
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != stage:
        return
    _visits[stage] = _visits.get(stage, 0) + 1
    if _visits[stage] >= int(nth or 1):
        os._exit(137)
