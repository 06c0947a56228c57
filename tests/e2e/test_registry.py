"""The registry end to end: `hub facility` edits the file, the running hub publishes each
change as an Organization event, verification follows it live, and a rebuild of the
registry projection answers "as of" questions exactly as live processing did."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from adapters.sdk import FacilityPublisher
from hub import clock
from hub.cli import app
from hub.engine.rebuild import rebuild
from hub.log.inspect import read_deadletters
from hub.registry import read
from hub.registry.audit import verify_journal
from hub.registry.consortium_file import read_consortium
from hub.registry.projection import RegistryProjection
from tests.support.hub_server import eventually, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def build_consortium(tmp_path: Path) -> Path:
    path = tmp_path / "consortium.yaml"
    f = ["--facilities", str(path)]
    cli("facility", "init", str(path), "--name", "test-consortium")
    cli("facility", "add", "county-a", "--name", "县医院", "--tier", "county-hospital",
        "--group", "county-x", *f)
    out = cli("facility", "add", "clinic-a", "--name", "村卫生室A", "--tier", "village-clinic",
              "--group", "county-x", "--imaging", "county-a", "--ecg", "county-a", *f)
    assert "private key for clinic-a#1 written to" in out and "gateway token" in out
    assert (tmp_path / "keys" / "clinic-a-1.pem").stat().st_mode & 0o777 == 0o600
    today = clock.today()
    cli("facility", "set-eqa", "county-a", "lab", "--from", str(today - timedelta(days=180)),
        "--to", str(today + timedelta(days=180)), *f)
    shown = cli("facility", "show", "clinic-a", *f)
    assert "reads imaging at: county-a" in shown and "clinic-a#1" in shown
    cli("facility", "set-referrals", "county-a", "surgery, cardiology", *f)
    shown = cli("facility", "show", "county-a", *f)
    assert "receives referrals for: cardiology, surgery" in shown
    return path


def test_cli_refuses_bad_edits(tmp_path):
    path = build_consortium(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["facility", "add", "clinic-b", "--name", "B", "--tier",
                              "village-clinic", "--imaging", "nowhere", "--facilities",
                              str(path)])
    assert bad.exit_code == 2 and "unknown facility 'nowhere'" in bad.output
    bad = runner.invoke(app, ["facility", "set-eqa", "county-a", "lab", "--from",
                              "2026-12-31", "--to", "2026-01-01", "--facilities", str(path)])
    assert bad.exit_code == 2 and "before --from" in bad.output
    bad = runner.invoke(app, ["facility", "add", "clinic-a", "--name", "A", "--tier",
                              "village-clinic", "--facilities", str(path)])
    assert bad.exit_code == 2 and "already registered" in bad.output
    assert len(read_consortium(path).facilities) == 2  # nothing half-written


async def test_registry_changes_are_events_and_take_effect_live(make_settings, tmp_path,
                                                                hub_clock):
    path = build_consortium(tmp_path)
    settings = make_settings(facilities_file=path, registry_poll_seconds=0.2)
    key_file = tmp_path / "keys" / "clinic-a-1.pem"
    async with running_hub(settings) as (hub, _):
        store = hub.store

        async def registered(kid: str) -> bool:
            found = (await asyncio.to_thread(read.current, store)).get("clinic-a")
            return found is not None and found.current_key().kid == kid

        await eventually(lambda: registered("clinic-a#1"))
        before_rotation = clock.now_rfc3339()
        old = FacilityPublisher.from_key_file(settings.bootstrap, "clinic-a#1", key_file,
                                              topic=settings.topics.inbound)
        old.publish(patient("p1"))
        old.flush()

        async def has_patient(pid: str) -> bool:
            from hub.record.read import get_resource

            return await asyncio.to_thread(get_resource, store, "Patient",
                                           f"clinic-a.{pid}") is not None

        await eventually(lambda: has_patient("p1"))

        await asyncio.sleep(0.05)
        cli("facility", "rotate-key", "clinic-a", "--facilities", str(path))
        await eventually(lambda: registered("clinic-a#2"))
        assert "clinic-a#1" in hub.directory._keys  # still there: old events verify

        old.publish(patient("p2"))  # old key, after the rotation: refused
        old.flush()
        old.close()
        new = FacilityPublisher.from_key_file(settings.bootstrap, "clinic-a#2",
                                              tmp_path / "keys" / "clinic-a-2.pem",
                                              topic=settings.topics.inbound)
        new.publish(patient("p3"))
        new.publish_many([patient("p4", "MRN4"), patient("p5", "MRN5")])  # one manifest
        new.flush()
        new.close()
        await eventually(lambda: has_patient("p3"))
        await eventually(lambda: has_patient("p5"))
        assert not await has_patient("p2")
        dead = await read_deadletters(settings, 10)
        assert any(d["reason"].startswith("key-retired") for d in dead)

        history = await asyncio.to_thread(read.history, store, "clinic-a")
        assert [r.current_key().kid for _, _, r in history] == ["clinic-a#1", "clinic-a#2"]
        then = await asyncio.to_thread(read.as_of, store, before_rotation)
        now = await asyncio.to_thread(read.current, store)
        assert then["clinic-a"].current_key().kid == "clinic-a#1"
        assert then["county-a"].eqa_valid("lab", clock.today())
        assert now["county-a"].referrals == ("cardiology", "surgery")  # routing, via the log
        assert "hub" in now and now["hub"].keys  # the gateway's key is in the registry too

        async def journaled() -> bool:
            rows = await asyncio.to_thread(read.history, store, "clinic-a")
            return len(rows) == 2

        await eventually(journaled)
        await asyncio.sleep(1)  # let the journal take the last events
        await asyncio.to_thread(rebuild, store, RegistryProjection())
        assert await asyncio.to_thread(read.as_of, store, before_rotation) == then
        assert await asyncio.to_thread(read.current, store) == now

        # The archive still verifies after the rotation, p1 (signed with the retired key)
        # and the members of p4 and p5's manifest included; a tampered row does not, and
        # its manifest's other member still does.
        n, failures, _ = await asyncio.to_thread(verify_journal, store)
        assert n >= 8 and not failures
        with store.begin() as conn:
            for pid in ("p1", "p4"):
                conn.execute(sa.text("UPDATE hub_journal SET data = :d WHERE subject = "
                                     f"'Patient/{pid}'"), {"d": orjson.dumps(patient(pid, "MRN9"))})
        n, failures, examples = await asyncio.to_thread(verify_journal, store)
        assert failures == {"bad-signature": 2}, examples
