"""The one clock, and the bundled demo consortium that moves with it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import clock
from hub.clock import FixedClock, SystemClock, clock_from_env, parse_offset, use_clock
from hub.registry.consortium_file import _shift_day, read_consortium


@pytest.mark.parametrize(("text", "seconds"), [
    ("86400", 86400), ("365d", 365 * 86400), ("-12h", -12 * 3600), ("1.5w", 1.5 * 7 * 86400),
    (" +30m ", 1800), ("2y", 2 * 365 * 86400)])
def test_offsets(text: str, seconds: float) -> None:
    assert parse_offset(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["soon", "1 year", "d", "", "5x"])
def test_bad_offsets_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="HUB_CLOCK_OFFSET must be seconds"):
        parse_offset(text)


def test_the_environment_shifts_the_process_clock() -> None:
    shifted = clock_from_env({"HUB_CLOCK_OFFSET": "10d"}).now()
    assert abs(shifted - datetime.now(UTC) - timedelta(days=10)) < timedelta(seconds=5)
    assert abs(clock_from_env({}).now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_fixed_clock_stands_still_until_advanced() -> None:
    fixed = FixedClock(datetime(2031, 2, 28, 23, 30, tzinfo=UTC))
    previous = use_clock(fixed)
    try:
        assert clock.now() == clock.now() == datetime(2031, 2, 28, 23, 30, tzinfo=UTC)
        assert clock.today() == date(2031, 3, 1)  # already tomorrow in the consortium's zone
        fixed.advance(timedelta(hours=1))
        assert clock.now_rfc3339() == "2031-03-01T00:30:00.000000Z"
    finally:
        use_clock(previous)
    with pytest.raises(ValueError):
        FixedClock(datetime(2031, 1, 1))


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
       st.integers(min_value=-600, max_value=600))
def test_shifting_by_months_keeps_month_ends_and_days(day: date, months: int) -> None:
    moved = _shift_day(day, months)
    assert (moved.year * 12 + moved.month) - (day.year * 12 + day.month) == months
    month_end = (day + timedelta(days=1)).month != day.month
    if month_end:
        assert (moved + timedelta(days=1)).day == 1
    else:
        assert moved.day == day.day or (moved + timedelta(days=1)).day == 1


@pytest.mark.parametrize("at", [datetime(2026, 7, 15, tzinfo=UTC),
                                datetime(2027, 12, 31, 20, tzinfo=UTC),
                                datetime(2035, 3, 1, tzinfo=UTC)])
def test_the_demo_consortium_is_current_on_any_day(at: datetime) -> None:
    previous = use_clock(FixedClock(at))
    try:
        c = read_consortium(None)
    finally:
        use_clock(previous)
    today = at.astimezone(clock.CONSORTIUM_TZ).date()
    by_id = {f.id: f.record for f in c.facilities}
    assert {q.category for q in by_id["township-1"].eqa if q.covers(today)} >= {"lab"}
    assert all(q.valid_from <= today - timedelta(days=150) for q in by_id["city-1"].eqa)
    assert all(q.valid_to >= today + timedelta(days=150) for q in by_id["city-1"].eqa)
    assert not any(q.covers(today) for q in by_id["township-4"].eqa)  # lapsed months ago
    assert all(k.created <= at for r in by_id.values() for k in r.keys)


def test_the_system_clock_reports_its_offset() -> None:
    assert "offset" in repr(SystemClock(timedelta(days=1)))


def test_a_bad_offset_in_the_environment_is_a_config_error() -> None:
    from hub.errors import ConfigError

    with pytest.raises(ConfigError, match="HUB_CLOCK_OFFSET"):
        clock_from_env({"HUB_CLOCK_OFFSET": "next week"})
