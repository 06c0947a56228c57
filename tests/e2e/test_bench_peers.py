"""``hub bench --peers`` as an operator runs it: one table, every row, no peer failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROWS = ("catch-up: stored events -> shared record", "live: topic -> shared record",
        "live: vs the Kafka-side ceiling")


def test_bench_peers_prints_every_row_of_one_table(tmp_path):
    env = {**os.environ, "COLUMNS": "400"}  # one line a row, whatever the terminal
    saved = tmp_path / "peers.json"
    done = subprocess.run([sys.executable, "-m", "hub.cli", "bench", "--peers", "--events",
                           "500", "--save", str(saved)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rows = {name: next((ln for ln in lines if name in ln), "") for name in ROWS}
    assert all(rows.values()), done.stdout
    for line in rows.values():
        # A rate beside the hub's (with its ratio), or a peer that is not installed here
        # saying so; never a peer that failed, nor rows that differ from the hub's.
        assert "failed" not in line and "| NO" not in line.replace("│", "|"), line
        assert line.count("ev/s") == 2 or "make bench-peers installs it" in line, line
    assert "ev/s, `hub rebuild`" in rows[ROWS[0]]
    assert ">= 0.5x" in rows[ROWS[2]]
    # The run's ratios, kept for a baseline (python -m bench.check) and --check.
    ratios = json.loads(saved.read_text())["ratios"]
    assert ratios.get(ROWS[0], 0) > 0, ratios
    assert set(ratios) <= set(ROWS)
