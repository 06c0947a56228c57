"""The one clock: every rule and service asks it for "now", never the machine directly.

Production runs on the machine's clock. ``HUB_CLOCK_OFFSET`` (seconds, or a number with a
unit: ``365d``, ``-12h``) shifts it for a whole deployment, every process alike, so a
training hub or a test run can live on another date while time still passes. Tests that need
time to stand still install a :class:`FixedClock` with :func:`use_clock`.

Durations (timeouts, retry pauses, lags) use ``time.monotonic`` and are not the clock's
business: only the calendar is.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from hub.errors import ConfigError

# The consortium's civil time zone: dates of results, orders and EQA windows are its days.
CONSORTIUM_TZ = ZoneInfo("Asia/Shanghai")
OFFSET_ENV = "HUB_CLOCK_OFFSET"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The machine's clock, shifted by a fixed offset (zero in production)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def __repr__(self) -> str:
        return f"SystemClock(offset={self.offset})"


class FixedClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware instant")
        self._at = at.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def advance(self, by: timedelta) -> None:
        with self._lock:
            self._at += by

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = at.astimezone(UTC)


def parse_offset(text: str) -> timedelta:
    """``"86400"``, ``"365d"``, ``"-12h"``, ``"1.5w"`` → a timedelta; ValueError otherwise."""
    m = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", text)
    if not m:
        raise ValueError(f"{OFFSET_ENV} must be seconds or a number with s/m/h/d/w/y, "
                         f"e.g. 365d; got {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    raw = (environ if environ is not None else os.environ).get(OFFSET_ENV, "").strip()
    try:
        return SystemClock(parse_offset(raw) if raw else timedelta(0))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


# Made on first use, not at import: a bad HUB_CLOCK_OFFSET is then an operator's error with
# one sentence (the CLI reports ConfigError), not a traceback from an import.
_clock: Clock | None = None


def use_clock(clock: Clock) -> Clock:
    """Install ``clock`` process-wide; returns the one it replaced."""
    global _clock
    previous, _clock = current(), clock
    return previous


def current() -> Clock:
    global _clock
    if _clock is None:
        _clock = clock_from_env()
    return _clock


def now() -> datetime:
    """The current instant (UTC) by the process clock."""
    return current().now()


def today() -> date:
    """Today in the consortium's time zone."""
    return current().now().astimezone(CONSORTIUM_TZ).date()


def rfc3339(at: datetime) -> str:
    """``at`` as RFC 3339 UTC with microseconds (``...Z``): fixed width, so the text order of
    stored times is their time order."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    """The current instant as RFC 3339 UTC with microseconds (``...Z``)."""
    return rfc3339(current().now())
