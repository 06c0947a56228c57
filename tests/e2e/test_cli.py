"""The `hub` command as an operator runs it."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from hub.errors import StoreError
from hub.log.broker import free_port
from hub.projections import all_projections
from hub.store.db import open_store
from tests.support.events import envelope, publish
from tests.support.proc import hub, hub_env, spawn
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e]


def _journal(tmp_path) -> tuple[int, int, set[str]]:
    if not (tmp_path / "hub.db").exists():
        return 0, 0, set()
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with store.connect() as conn:
            journaled = conn.execute(sa.text("SELECT COUNT(*) FROM hub_journal")).scalar_one()
            tiers = conn.execute(sa.text(
                "SELECT COUNT(DISTINCT facility) FROM activity_counts")).scalar_one()
            types = set(conn.execute(sa.text(
                "SELECT DISTINCT resource_type FROM record_resources")).scalars())
    except StoreError:  # tables not made yet: the demo is still starting
        return 0, 0, set()
    finally:
        store.dispose()
    return journaled, tiers, types


def test_demo_moves_off_a_taken_port_runs_and_stops_cleanly_on_ctrl_c(tmp_path):
    """One demo run (they are the suite's dearest tests): a taken port, the simulation, and
    Ctrl-C draining it. tests/e2e/test_demo.py checks what the demo shows."""
    import socket

    env = os.environ.copy()
    env.update({"HUB_EMBEDDED_BROKER_PORT": str(free_port()), "HUB_DATA_DIR": str(tmp_path)})
    env.pop("HUB_KAFKA_BOOTSTRAP", None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = spawn("demo", "--port", str(taken), env=env)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                journaled, tiers, types = _journal(tmp_path)
                if journaled > 200 and tiers >= 10 and {"Patient", "Observation"} <= types:
                    break
                time.sleep(1)
        finally:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert f"api port {taken} is taken; using" in out
    assert "demo stopped cleanly" in out and "accepted events by type" in out
    journaled, tiers, types = _journal(tmp_path)
    assert journaled > 200
    assert tiers >= 10  # hospitals, centres and village clinics all published
    assert {"Patient", "Observation"} <= types


async def test_rebuild_command_shows_progress_and_keeps_content(make_settings, tmp_path):
    settings = make_settings()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    await publish(settings, [envelope(patient(f"p{i}")) for i in range(40)]
                  + [envelope(observation(f"o{i}", pid=f"p{i}")) for i in range(40)])
    env = hub_env(settings, db)
    assert hub("project", "--until-caught-up", env=env).returncode == 0
    done = hub("rebuild", "shared_record", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # 80 facility events, and the registry the hub published on start: 18 members, itself,
    # and the family-doctor teams, signed residents and home meters.
    store = open_store(db)
    try:
        with store.connect() as conn:
            journaled = conn.execute(sa.text("SELECT COUNT(*) FROM hub_journal")).scalar_one()
            facilities = conn.execute(sa.text(
                "SELECT COUNT(*) FROM hub_journal WHERE source != 'urn:hie:hub'")).scalar_one()
    finally:
        store.dispose()
    assert facilities == 80 and journaled > 80
    assert f"rebuilt shared_record from {journaled} journal events" in done.stdout
    assert f"{journaled}/{journaled}" in done.stdout  # the progress bar's count
    bad = hub("rebuild", "journal", env=env)
    assert bad.returncode != 0 and "rebuildable" in (bad.stdout + bad.stderr)


def test_clear_errors_for_operator_mistakes(tmp_path):
    env = os.environ.copy()
    env["HUB_FACILITIES_FILE"] = str(tmp_path / "missing.yaml")
    done = hub("facility", "list", env=env)
    assert done.returncode == 2 and "cannot read consortium file" in done.stderr
    done = hub("facility", "set-eqa", "township-1", "lab", "--from", "2026-01-01",
               "--to", "2026-12-31", env=env)
    assert done.returncode == 2 and "cannot read consortium file" in done.stderr
    env.pop("HUB_FACILITIES_FILE")
    done = hub("topics", "--kafka", f"127.0.0.1:{free_port()}", env=env, timeout=90)
    assert done.returncode == 2 and "no Kafka broker answered" in done.stderr
    done = hub("facility", "rotate-key", "township-1", env=env)
    assert done.returncode == 2 and "bundled demo-consortium.yaml is read-only" in done.stderr
    listing = hub("facility", "list", env=env)
    assert "township-1" in listing.stdout and "village-clinic" in listing.stdout


def test_projection_version_change_rebuilds_from_the_journal(store):
    from hub.engine import tracking
    from hub.engine.rebuild import ensure_built

    proj = all_projections()["activity"]
    ensure_built(store, proj)
    with store.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO activity_counts VALUES ('stale', 'Patient', 99, 0, '2020')"))
    bumped = type("ActivityV2", (type(proj),), {"version": proj.version + 1})()
    ensure_built(store, bumped)  # journal is empty: the stale row must be gone
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM activity_counts")).scalar_one() == 0
        assert tracking.projection_state(conn, "activity")[0] == proj.version + 1
