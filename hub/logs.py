"""Log hygiene for long-running processes: a broker outage must read as one line, not one
line per client, per connection attempt, per second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# Libraries that log every retry of what the hub reports once itself (Outage, /ready).
CHATTY = ("aiokafka", "kafka")


class OncePerWindow(logging.Filter):
    """Lets a library's message (by logger and template) through once per ``window``
    seconds; the next one that passes says how many were held back."""

    def __init__(self, prefixes: tuple[str, ...] = CHATTY, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.msg)
        now = self.clock()
        last, held = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.window:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last " \
                         f"{self.window:g} s not shown)"
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Attach the filter to the root logger's handlers (a filter on a logger would not see
    its children's records)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, OncePerWindow) for f in handler.filters):
            handler.addFilter(OncePerWindow())
