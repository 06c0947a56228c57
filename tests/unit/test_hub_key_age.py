"""The hub key's creation is read on the hub's clock, which may be shifted from the machine's:
events the hub signs right after it starts must not predate their own key."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from hub import clock
from hub.signing import load_or_create_hub_key


@pytest.mark.parametrize("days", [-105, 0, 365])
def test_the_key_is_as_old_as_its_file_on_the_hubs_clock(tmp_path, days):
    path = tmp_path / "hub.pem"
    load_or_create_hub_key(path)
    made = datetime.now(UTC) - timedelta(hours=3)
    os.utime(path, (made.timestamp(), made.timestamp()))
    previous = clock.use_clock(clock.SystemClock(timedelta(days=days)))
    try:
        signer = load_or_create_hub_key(path)
        again = load_or_create_hub_key(path)
        now = clock.now()
    finally:
        clock.use_clock(previous)
    assert signer.created == again.created  # the same on every start
    age = now - signer.created
    assert timedelta(hours=3) - timedelta(seconds=5) < age < timedelta(hours=3, seconds=5)
