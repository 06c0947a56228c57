"""The console's pure rules: who sees which page and whose traffic, when a projection is
stalled, and what the session cookie proves."""

from __future__ import annotations

import dataclasses

from itsdangerous import URLSafeTimedSerializer

from hub.access.rules import Principal
from hub.activity.projection import utc_minute
from hub.console.access import is_operator, traffic_facilities, visible_pages
from hub.console.session import credential_digest, csrf_ok, open_session, read_session
from hub.console.status import alert
from hub.console.web import safe_next
from hub.facilities import FacilityDirectory
from hub.registry.consortium_file import load_directory

directory = load_directory(None)
ALL = frozenset({"*"})


def titles(p: Principal) -> list[str]:
    return [page.title for page in visible_pages(p)]


def test_operators_see_every_page_and_everyone_s_traffic():
    ops = directory.reader("demo-app-token-consortium-ops")
    assert is_operator(ops)
    assert traffic_facilities(ops) is None
    assert titles(ops) == ["Overview", "Dead letters", "Event lookup", "Recognition",
                           "Reading", "Referral", "Monitoring", "Registry"]


def test_a_facility_sees_its_own_traffic_and_the_pages_its_token_reads():
    township = directory.reader("demo-secret-township-1")
    assert not is_operator(township)
    assert traffic_facilities(township) == {"township-1"}
    assert "Dead letters" in titles(township)  # its own, as in GET /deadletters


def test_an_app_sees_only_what_its_scopes_name():
    dashboard = directory.reader("demo-app-token-chronic-dashboard")
    assert not is_operator(dashboard)
    assert traffic_facilities(dashboard) == {"township-1", "township-2", "village-1",
                                             "village-2"}
    assert titles(dashboard) == ["Overview", "Event lookup", "Registry"]
    monitor = directory.reader("demo-app-token-hub-monitor")
    # every facility but no deadletters scope: not an operator, no dead letters
    assert not is_operator(monitor) and "Dead letters" not in titles(monitor)
    assert not is_operator(Principal("facility", "x", ALL, frozenset({"*", "deadletters"})))


def runner(**changes) -> dict:
    base = {"name": "lab", "applied": 10, "lag": 0, "caught_up": True, "deadlettered": 0,
            "idle_seconds": 5.0, "component": "running"}
    return base | changes


def test_a_projection_with_events_waiting_and_no_commit_for_a_minute_is_stalled():
    assert alert(runner()) is None
    assert alert(runner(lag=3, idle_seconds=59)) is None
    assert alert(runner(lag=0, idle_seconds=3600)) is None  # idle, nothing to do
    assert alert(runner(lag=3, idle_seconds=61)) == (
        "lab is stalled: 3 events waiting and nothing applied for 61 s")
    assert "since it started" in alert(runner(lag=1, idle_seconds=None))
    assert alert(runner(component="restarting")) == "lab is restarting"


def test_the_session_cookie_names_who_logged_in_and_ends_when_the_token_changes():
    session, cookie = open_session(directory, " demo-secret-county-1 ")
    assert session.principal.kind == "facility" and session.principal.id == "county-1"
    assert "demo-secret-county-1" not in cookie
    again = read_session(directory, cookie)
    assert again is not None and again.principal == session.principal
    assert again.csrf == session.csrf and csrf_ok(again, session.csrf)
    assert not csrf_ok(again, "") and not csrf_ok(again, None)
    assert not csrf_ok(again, session.csrf + "x")
    # tampered, or signed with another key: nobody
    assert read_session(directory, cookie[:-2] + "xx") is None
    forged = URLSafeTimedSerializer(b"k" * 32, salt="hie-console-session").dumps(
        {"k": "facility", "id": "county-1", "d": credential_digest("demo-secret-county-1"),
         "c": "x"})
    assert read_session(directory, forged) is None
    assert read_session(directory, None) is None
    # the consortium file gives county-1 a new token: the old session ends
    rotated = FacilityDirectory(
        [dataclasses.replace(f, token="new-secret") if f.id == "county-1" else f
         for f in directory], directory.consortium, list(directory.apps.values()))
    assert read_session(rotated, cookie) is None


def test_after_login_only_console_paths_are_followed():
    assert safe_next("/console/deadletters?reason=x") == "/console/deadletters?reason=x"
    for elsewhere in ("https://evil.example/", "//evil.example/console", "/docs", None, "",
                      "/console\\@evil", "/console//evil.example"):
        assert safe_next(elsewhere) == "/console"


def test_activity_counts_each_event_in_its_utc_minute():
    assert utc_minute("2026-12-01T10:22:49.297369Z") == "2026-12-01T10:22"
    assert utc_minute("2026-12-01T18:22:59+08:00") == "2026-12-01T10:22"
    assert utc_minute("2026-12-01T00:05:00") == "2026-11-30T16:05"  # consortium time
    assert utc_minute("yesterday") is None


def test_every_console_template_and_asset_is_in_the_wheel():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["hub"]
    console = root / "hub" / "console"
    files = [p.relative_to(root / "hub").as_posix()
             for folder in ("templates", "static") for p in (console / folder).rglob("*")
             if p.is_file()]
    assert any(f.endswith("chart.umd.min.js") for f in files)
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert missing == []
