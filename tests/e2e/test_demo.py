"""``hub demo`` as a user meets it: a story living at the hub's clock, every view filled in
the first seconds through the public entry paths, the README's SDK example accepted, honest
output off a terminal, and a second run that continues the story instead of replaying it.

The demo runs on its own bundled broker (like ``make demo``; a second run restarts it with an
empty log, as a real rerun does) at a clock set to another day than today."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from rich.console import Console

from hub import clock
from hub.clock import CONSORTIUM_TZ, SystemClock
from hub.config import Settings
from hub.demo.run import STATE_FILE, clear_store, hub_command, run_demo
from hub.log.broker import free_port
from hub.store.db import open_store
from tests.support.events import read_json_topic
from tests.support.hub_server import auth, eventually

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 6, 15, 10, 0, tzinfo=CONSORTIUM_TZ)  # not today, whenever tests run


def readme_sdk_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text("utf-8"), re.S)
    # The first one, in "Signed provenance": the one the demo prepares a key for.
    block = next(b for b in blocks if "FacilityPublisher.from_key_file" in b)
    return block


def settings_in(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, api_port=free_port(), embedded_broker_port=free_port(),
                    events_partitions=3)


def facility_events(db: str) -> list[tuple[str, str, dict]]:
    store = open_store(db)
    try:
        with store.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT source, subject, data FROM hub_journal "
                "WHERE source != 'urn:hie:hub' ORDER BY seq")).all()
    finally:
        store.dispose()
    return [(src, subj, json.loads(data)) for src, subj, data in rows]


@pytest.fixture
def another_day():
    """The hub's clock on another day than today, still running (the demo needs time to
    pass: a fixed clock would stamp every live event alike)."""
    previous = clock.use_clock(SystemClock(DAY - datetime.now(UTC)))
    yield
    clock.use_clock(previous)


async def test_the_demo_fills_every_view_then_continues_its_story(tmp_path, another_day):
    data = tmp_path / "hub-data"
    settings = settings_in(data)
    out = io.StringIO()
    console = Console(file=out, width=80)  # a log file: no terminal, 80 columns
    demo = asyncio.create_task(run_demo(settings, console, seconds=40, rate=40,
                                        history_events=1_200))
    base = f"http://127.0.0.1:{settings.api_port}"
    key = data / "keys" / "village-1-1.pem"

    async def ready() -> bool:
        if demo.done():
            demo.result()
        return key.exists() and "Try (one command per line)" in out.getvalue()

    await eventually(ready, timeout=60)
    patient = re.search(r"Observation\?patient=Patient/([\w.-]+)'", out.getvalue()).group(1)

    # The README's SDK example, as printed there, run from the directory holding hub-data/
    # (only the broker's port differs: this demo's is a free one).
    code = readme_sdk_example()
    assert '"hub-data/keys/village-1-1.pem"' in code and '"village-1#1"' in code
    sdk = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code.replace("127.0.0.1:19092", settings.bootstrap),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    sdk_out, _ = await asyncio.wait_for(sdk.communicate(), 60)
    assert sdk.returncode == 0, sdk_out.decode()

    county = httpx.AsyncClient(base_url=base, headers=auth("demo-secret-county-1"), timeout=30)
    city = httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1"), timeout=30)
    team = httpx.AsyncClient(base_url=base, headers=auth("demo-secret-community-1"),
                             timeout=30)
    seen: dict[str, object] = {}
    try:
        async def every_view_has_data() -> bool:
            if demo.done():
                demo.result()
            checks = {
                "worklist": lambda: county.get("/imaging/worklist"),
                "turnaround": lambda: county.get("/imaging/turnaround"),
                "statistics": lambda: city.get("/recognition/statistics"),
                "lab": lambda: city.get("/fhir/Observation", params={
                    "patient": f"Patient/{patient}", "category": "laboratory"}),
                "index": lambda: city.get(f"/mpi/records/{patient}"),
                "sdk": lambda: city.get("/fhir/Patient/village-1.sdk-1"),
                "referrals": lambda: city.get("/referrals/statistics"),
                "alerts": lambda: team.get("/monitoring/worklist"),
            }
            for name, call in checks.items():
                if name in seen:
                    continue
                r = await call()
                body = r.json() if r.status_code == 200 else {}
                if (body.get("count") or body.get("rows") or body.get("entry")
                        or body.get("records") or body.get("resourceType") == "Patient"):
                    seen[name] = body
                    if name == "statistics" and not body["recognised"]:
                        del seen[name]  # a re-test alone is not the whole story
                    # The first studies listed may be the back-filled history's oldest, past
                    # their SLA by now; the live ones that follow are not.
                    if name == "worklist" and all(s["breached"] for s in body["studies"]):
                        del seen[name]
            return len(seen) == len(checks)

        await eventually(every_view_has_data, timeout=40)
        prompts = await read_json_topic(settings, settings.topics.recognition, 1, timeout=20)
    finally:
        await county.aclose()
        await city.aclose()
        await team.aclose()
    demo.cancel()  # Ctrl-C: stops publishing, drains, prints the summary
    await asyncio.wait_for(demo, 90)

    # Dated around the clock's "now": results recent enough to be recognised, SLAs realistic.
    def days_before(text: str) -> float:
        then = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (DAY - then).total_seconds() / 86400

    work = seen["worklist"]["studies"]
    assert any(not s["breached"] for s in work)
    assert all(-1 < days_before(s["started"]) < 15 for s in work)  # the back-filled fortnight
    assert all(-1 < days_before(e["resource"]["effectiveDateTime"]) < 15
               for e in seen["lab"]["entry"])
    assert all(-1 < days_before(r["day"] + "T12:00:00+08:00") < 15
               for r in seen["turnaround"]["rows"])
    assert {r["month"] for r in seen["statistics"]["rows"]} == {"2026-06"}
    assert prompts and prompts[0]["type"] == "hie.recognition.prompt.v1"
    assert patient in seen["index"]["records"]

    first = out.getvalue()
    assert "fresh start" in first and "accepted events by type" in first
    lines = first.splitlines()
    # Off a terminal: status lines, not a live display; commands never broken across lines.
    assert sum(line.startswith("[") and "journal" in line for line in lines) >= 2
    commands = [line.strip() for line in lines if line.strip().startswith(("curl", hub_command()))]
    assert len(commands) >= 6
    for line in commands:
        if line.startswith("curl"):
            assert re.fullmatch(r"curl -H 'Authorization: Bearer demo-secret-[\w-]+' "
                                r"'http://127\.0\.0\.1:\d+/\S+'", line), line
    flat = " ".join(first.replace("│", " ").split())
    assert re.search(r"journal [\d,]+ = earlier runs 0 \+ this run: facilities [\d,]+ \+ "
                     r"hub's own [\d,]+", flat), flat
    assert re.search(r"referrals: [\d,]+ up, [\d,]+ down; ", flat), flat
    # The family-doctor team's worklist, and the summary's count of open alerts.
    assert {a["kind"] for a in seen["alerts"]["alerts"]} <= {
        "critical-reading", "uncontrolled-bp", "uncontrolled-glucose", "missing-readings"}
    found = re.search(r"remote monitoring: ([\d,]+) home readings; alerts ([\d,]+) open", flat)
    assert found and int(found[1].replace(",", "")) > 0 and int(found[2].replace(",", "")) > 0
    assert (data / STATE_FILE).exists()

    db = settings.db_url
    before = facility_events(db)
    patients_before = {(src, s) for src, s, _ in before if s.startswith("Patient/")}

    # A second run on the same data directory (a new broker, like a rerun of `make demo`).
    out2 = io.StringIO()
    await run_demo(settings_in(data), Console(file=out2, width=80), seconds=6, rate=40,
                   history_events=1_200)
    second = out2.getvalue()
    assert re.search(r"continuing the story from [\d,]+ journaled events \(run 2\)", second)
    after = facility_events(db)
    assert len(after) > len(before)
    assert len({(src, s) for src, s, _ in after if s.startswith("Patient/")}) > len(
        patients_before)
    # No id handed out twice: each resource has one first version in the whole journal, so
    # the second run overwrote nothing of the first.
    firsts = Counter((src, subj) for src, subj, res in after
                     if (res.get("meta") or {}).get("versionId") == "1")
    assert firsts and max(firsts.values()) == 1
    # The same residents come back: second-run events about first-run patients.
    assert any((src, (res.get("subject") or {}).get("reference")) in patients_before
               for src, _, res in after[len(before):])

    # --fresh starts over: the store and the story go, the keys stay.
    removed = clear_store(settings)
    assert {p.name for p in removed} >= {"hub.db", STATE_FILE} and key.exists()
