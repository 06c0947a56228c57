"""Which dates the time-sensitive tests run at.

``HUB_TEST_CLOCKS`` lists them, comma-separated: ``today``, an offset (``+1y``, ``-30d``), an
ISO date, or ``random`` (a day between half a year back and three years ahead, drawn from
``HUB_TEST_CLOCK_SEED`` or a fresh seed printed in the report header). The default runs each
time-sensitive test three times: today, a year ahead, and at a random date. Every process a
test starts inherits the same shift through ``HUB_CLOCK_OFFSET``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from hub import clock
from hub.clock import CONSORTIUM_TZ, parse_offset

CLOCKS_ENV = "HUB_TEST_CLOCKS"
SEED_ENV = "HUB_TEST_CLOCK_SEED"
DEFAULT = "today,+1y,random"
SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1 << 30))
# Parallel test workers start from this process's environment: they draw the same date.
os.environ[SEED_ENV] = str(SEED)


@dataclass(frozen=True)
class TestClock:
    name: str
    offset: timedelta

    __test__ = False  # not a test class, whatever pytest thinks of its name

    @property
    def day(self) -> date:
        """Today in the consortium's zone, by this clock."""
        return (datetime.now(UTC) + self.offset).astimezone(CONSORTIUM_TZ).date()

    def on(self, days: int, at: str = "08:00:00") -> str:
        """An RFC 3339 local time ``days`` from today (negative: in the past)."""
        return f"{(self.day + timedelta(days=days)).isoformat()}T{at}+08:00"

    def date(self, days: int = 0) -> str:
        return (self.day + timedelta(days=days)).isoformat()


def _parse(spec: str) -> TestClock:
    spec = spec.strip()
    if spec == "today":
        return TestClock("today", timedelta(0))
    if spec == "random":
        days = random.Random(SEED).randrange(-182, 3 * 365)
        return TestClock(f"random({days:+d}d,seed={SEED})", timedelta(days=days))
    if spec[:1] in "+-":
        return TestClock(spec, parse_offset(spec))
    try:
        target = datetime.combine(date.fromisoformat(spec), time(12), UTC)
    except ValueError as exc:
        raise ValueError(f"{CLOCKS_ENV}: {spec!r} is not today, random, +Nd/+Ny or a date"
                         ) from exc
    # Noon of that day in whole seconds, so every process lands on the same calendar day.
    return TestClock(spec, timedelta(seconds=round((target - datetime.now(UTC))
                                                   .total_seconds())))


def chosen_clocks() -> list[TestClock]:
    return [_parse(s) for s in (os.environ.get(CLOCKS_ENV) or DEFAULT).split(",") if s.strip()]


def local_time(days: int, at: str = "08:00:00") -> str:
    """An RFC 3339 local time ``days`` from today by the process clock (the run's date)."""
    return f"{(clock.today() + timedelta(days=days)).isoformat()}T{at}+08:00"
