"""An operator's mistakes: every command answers with one line on stderr and exit code 2,
never a traceback, and leaves no file behind.

The situations: no token, no hub answering at --url, no broker at --kafka (a free port on
127.0.0.1), no store yet, and bad argument values (dates, facility ids, files, URLs). Most
run in-process through typer's CliRunner; a few run as a real process, as typed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.cli.common import hub_command
from hub.log.broker import free_port
from tests.support.hl7_messages import oru

pytestmark = [pytest.mark.e2e]

DICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CLEAN_ENV = ("HUB_KAFKA_BOOTSTRAP", "HUB_DATABASE_URL", "HUB_FACILITIES_FILE", "HUB_TOKEN",
             "HUB_URL", "HUB_SIGNING_KEY_FILE", "HUB_IDENTITY_SECRET_FILE",
             "HUB_BROKER_WAIT_SECONDS", "HUB_API_PORT", "HUB_API_HOST",
             "HUB_MONITORING_MQTT_URL")


class Place:
    """A working folder, a data folder (HUB_DATA_DIR) and the operator's input files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.data = root / "data"
        self.inputs = root / "inputs"
        self.dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        self.no_hub = f"http://127.0.0.1:{free_port()}"

    def files(self) -> dict[str, bytes]:
        """Every path under the root, with the content of files: what a command changed."""
        return {str(p.relative_to(self.root)): p.read_bytes() if p.is_file() else b"/"
                for p in sorted(self.root.rglob("*"))}


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Place:
    p = Place(tmp_path)
    p.work.mkdir()
    p.inputs.mkdir()
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUB_DATA_DIR", str(p.data))
    monkeypatch.setenv("HUB_BROKER_WAIT_SECONDS", "1")  # the default (5 s) has its own test
    monkeypatch.chdir(p.work)
    # The operator's own files: an editable consortium, an HL7 file, a PACS drop folder.
    done = CliRunner().invoke(app, ["facility", "init", str(p.inputs / "c.yaml"), "--demo"])
    assert done.exit_code == 0, done.output
    (p.inputs / "lab.hl7").write_text(oru())
    (p.inputs / "empty.hl7").write_text("")
    (p.inputs / "pacs").mkdir()
    shutil.copy(DICOM_FILES / "CT_small.dcm", p.inputs / "pacs" / "CT_small.dcm")
    (p.inputs / "bad.yaml").write_text("facilities: [\n")
    return p


def one_line_error(result_code: int, stdout: str, stderr: str, expected: str) -> str:
    out = f"exit {result_code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert result_code == 2, out
    assert "Traceback" not in stdout + stderr, out
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert stdout.strip() == "", out
    assert expected in lines[0], out
    return lines[0]


def check(place: Place, args: list[str], expected: str) -> str:
    before = place.files()
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback would have reached the terminal
    line = one_line_error(result.exit_code, result.stdout, result.stderr, expected)
    assert place.files() == before, f"{args} changed files"
    return line


# --- no token, no hub ------------------------------------------------------------------------

API_COMMANDS = [
    ["mpi", "reviews"],
    ["mpi", "confirm", "review-1"],
    ["mpi", "reject", "review-1"],
    ["mpi", "unlink", "township-1.p-1"],
    ["mpi", "merge", "township-1.p-1", "county-1.p-2"],
    ["mpi", "show", "township-1.p-1"],
    ["recognition", "check", "--patient", "Patient/township-1.p-1", "--items", "GLU"],
]


@pytest.mark.parametrize("args", API_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_api_commands_without_a_token(place, args):
    line = check(place, args, "no token given")
    assert "--token" in line and "HUB_TOKEN" in line


@pytest.mark.parametrize("args", API_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_api_commands_with_no_hub_answering(place, args):
    check(place, [*args, "--token", "t", "--url", place.no_hub], f"no hub answered at "
          f"{place.no_hub}")


@pytest.mark.parametrize(("args", "expected"), [
    (["mpi", "reviews", "--token", "t", "--url", "ftp://example"], "is not an http(s) URL"),
    (["mpi", "show", "a.b", "--token", "t", "--url", "127.0.0.1:8080"], "is not an http(s) URL"),
    (["mpi", "reviews", "--token", "t", "--url", "http://"], "is not an http(s) URL"),
    (["mpi", "reviews", "--token", "t", "--status", "open"], "--status 'open'"),
    (["recognition", "check", "--patient", "Patient/a.b", "--items", "GLU", "--token", "t",
      "--time", "tomorrow"], "is not an RFC 3339 time"),
    (["recognition", "check", "--patient", "Patient/a.b", "--items", " , ", "--token", "t"],
     "names no catalogue item"),
])
def test_api_commands_with_bad_values(place, args, expected):
    check(place, args, expected)


def test_a_token_from_the_environment_counts(place, monkeypatch):
    monkeypatch.setenv("HUB_TOKEN", "t")
    check(place, ["mpi", "reviews", "--url", place.no_hub], "no hub answered")


# --- no broker ---------------------------------------------------------------------------------

def test_commands_that_need_kafka_give_up_on_a_silent_broker(place):
    dead = place.dead
    hl7 = str(place.inputs / "lab.hl7")
    pacs = str(place.inputs / "pacs")
    for args in (
        ["topics", "--kafka", dead],
        ["ingest", "--kafka", dead],
        ["project", "--kafka", dead],
        ["serve", "--kafka", dead, "--port", str(free_port())],
        ["demo", "--kafka", dead, "--port", str(free_port()), "--seconds", "1"],
        ["mllp", "--facility", "township-1", "--kafka", dead, "--host", "127.0.0.1",
         "--port", str(free_port())],
        ["hl7-import", hl7, "--facility", "township-1", "--kafka", dead],
        ["dicom-scan", pacs, "--facility", "township-1", "--kafka", dead],
        ["app", "notifier", "--facility", "township-1", "--kafka", dead],
        ["devices", "--mqtt", "mqtt://127.0.0.1:1883", "--kafka", dead],
    ):
        started = time.monotonic()
        line = check(place, args, "no Kafka broker answered")
        assert dead in line
        assert time.monotonic() - started < 15, f"{args[0]} took too long to give up"


def test_ingest_without_kafka_looks_for_the_bundled_one_and_says_so(place, monkeypatch):
    monkeypatch.setenv("HUB_EMBEDDED_BROKER_PORT", place.dead.rpartition(":")[2])
    check(place, ["ingest"], "no Kafka broker answered")


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:port", "host:99999"])
def test_a_malformed_kafka_address(place, value):
    check(place, ["topics", "--kafka", value], "is not HOST:PORT")


def test_a_taken_port(place):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        check(place, ["broker", "--port", taken], f"port {taken} is already in use")
        check(place, ["serve", "--port", taken], f"port {taken} on 127.0.0.1 is taken")


def test_a_bad_setting_in_the_environment(place, monkeypatch):
    monkeypatch.setenv("HUB_BROKER_WAIT_SECONDS", "-1")
    check(place, ["topics", "--kafka", place.dead], "bad setting HUB_BROKER_WAIT_SECONDS")


# --- no store yet --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["facility", "show", "township-1", "--history"],
    ["facility", "show", "township-1", "--as-of", "now"],
    ["facility", "list", "--as-of", "2026-01-01T00:00:00Z"],
    ["verify"],
    ["rebuild", "shared_record"],
], ids=lambda a: " ".join(a))
def test_reading_commands_before_any_hub_ran(place, args):
    line = check(place, args, "no hub has run here yet")
    assert str(place.data / "hub.db") in line and "serve" in line and "demo" in line
    assert not place.data.exists()


def test_a_store_url_naming_a_missing_file_is_not_created(place):
    missing = place.root / "elsewhere" / "hub.db"
    check(place, ["verify", "--db", f"sqlite:///{missing}"], "no hub has run here yet")
    assert not missing.parent.exists()


def test_an_unusable_store_url(place):
    check(place, ["verify", "--db", "nonsense://x"], "cannot open store")


# --- bad values, unknown ids, missing files --------------------------------------------------

def test_registry_edits_that_are_refused_change_nothing(place):
    c = ["--facilities", str(place.inputs / "c.yaml")]
    for args, expected in (
        (["facility", "set-eqa", "township-1", "lab", "--from", "2026-02-30", "--to",
          "2026-12-31", *c], "--from '2026-02-30' is not a day"),
        (["facility", "set-eqa", "township-1", "lab", "--from", "2026-01-01", "--to",
          "end", *c], "--to 'end' is not a day"),
        (["facility", "set-eqa", "township-1", "lab", "--from", "2026-12-31", "--to",
          "2026-01-01", *c], "--to is before --from"),
        (["facility", "set-eqa", "nowhere", "lab", "--from", "2026-01-01", "--to",
          "2026-12-31", *c], "no facility 'nowhere'"),
        (["facility", "rotate-key", "nowhere", *c], "no facility 'nowhere'"),
        (["facility", "set-referrals", "county-1", "Cardiology", *c],
         "'Cardiology' is not a service name"),
        (["facility", "set-referrals", "nowhere", "cardiology", *c], "no facility 'nowhere'"),
        (["facility", "rotate-key", "township-1", "--public-key", "not-a-key", *c],
         "public key"),
        (["facility", "add", "clinic-x", "--name", "X", "--tier", "hospital", *c],
         "--tier must be one of"),
        (["facility", "add", "clinic-x", "--name", "X", "--tier", "village-clinic",
          "--imaging", "nowhere", *c], "unknown facility 'nowhere'"),
        (["facility", "add", "township-1", "--name", "X", "--tier", "village-clinic", *c],
         "already registered"),
        (["facility", "add", "clinic-x", "--name", "X", "--tier", "village-clinic",
          "--timezone", "Beijing", *c], "timezone 'Beijing' is not an IANA time zone"),
        (["facility", "add", "Bad Id!", "--name", "X", "--tier", "village-clinic", *c],
         "Bad Id!"),
        (["facility", "rotate-key", "township-1"], "read-only"),
        (["facility", "init", str(place.inputs / "c.yaml")], "exists; not overwriting"),
    ):
        check(place, args, expected)
    assert not (place.inputs / "keys").exists()  # no private key left for a refused change


@pytest.mark.parametrize(("args", "expected"), [
    (["facility", "show", "nowhere"], "no facility 'nowhere'"),
    (["facility", "list", "--as-of", "yesterday"], "is not an RFC 3339 time"),
    (["facility", "list", "--as-of", "2026-01-01T00:00:00"], "has no time zone"),
    (["facility", "list", "--facilities", "missing.yaml"], "cannot read consortium file"),
    (["facility", "list", "--facilities", "."], "cannot read consortium file"),
    (["facility", "list", "--facilities", "{inputs}/bad.yaml"], "is not valid YAML"),
    (["rebuild", "journal"], "unknown projection 'journal'"),
    (["project", "nope"], "unknown projection 'nope'"),
    (["bench", "--only", "speed"], "--only 'speed' is not a measurement"),
    (["bench", "--peers", "--only", "rebuild"], "--peers is a measurement of its own"),
    (["bench", "--save", "nowhere/run.json"], "the folder nowhere does not exist"),
    (["hl7-import", "missing.hl7", "--facility", "township-1"], "missing.hl7"),
    (["hl7-import", "{inputs}/empty.hl7", "--facility", "township-1"], "no HL7 v2 messages"),
    (["hl7-import", "{inputs}/lab.hl7", "--facility", "nowhere"], "no facility 'nowhere'"),
    (["hl7-import", "{inputs}/lab.hl7", "--facility", "township-1", "--kid", "township-1"],
     "is not a key of township-1"),
    (["hl7-import", "{inputs}/lab.hl7", "--facility", "township-1", "--key-file",
      "missing.pem"], "cannot read the Ed25519 private key"),
    (["mllp", "--facility", "nowhere"], "no facility 'nowhere'"),
    (["app", "notifier", "--facility", "nowhere"], "no facility 'nowhere'"),
    (["dicom-scan", "missing", "--facility", "township-1"], "is not a folder"),
    (["dicom-scan", "{inputs}/pacs", "--facility", "township-1", "--endpoint", "pacs"],
     "is not an http(s) URL"),
    (["dicom-scan", "{inputs}/pacs", "--facility", "nowhere"], "no facility 'nowhere'"),
    (["serve", "--mqtt", "http://127.0.0.1:1883"], "expected mqtt://HOST:PORT"),
    (["devices", "--mqtt", "mqtt://"], "expected mqtt://HOST:PORT"),
    (["demo", "--mqtt", "mqtt://127.0.0.1:port"], "MQTT address 'mqtt://127.0.0.1:port'"),
])
def test_bad_values(place, args, expected):
    check(place, [a.format(inputs=place.inputs) for a in args], expected)


def test_typer_usage_errors_exit_2_without_a_traceback(place):
    for args in (["deadletters", "--limit", "0"], ["facility", "show"], ["nonsense"],
                 ["demo", "--rate", "0"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


# --- as typed: real processes --------------------------------------------------------------

def _entry_points() -> list[list[str]]:
    out = [[sys.executable, "-m", "hub.cli"]]
    script = Path(sys.executable).parent / "hub"
    if script.is_file():
        out.append([str(script)])
    return out


def typed(place: Place, command: list[str], *args: str, **env: str
          ) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    full.update({"HUB_DATA_DIR": str(place.data), "PATH": "/usr/bin:/bin", **env})
    return subprocess.run([*command, *args], cwd=place.work, env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", _entry_points(), ids=lambda c: Path(c[-1]).name)
def test_as_typed_no_traceback_reaches_the_terminal(place, command):
    before = place.files()
    for args, expected in (
        (["topics", "--kafka", place.dead], "no Kafka broker answered"),
        (["deadletters", "--reason", "invalid-json"], "no hub has run here yet"),
        (["facility", "show", "township-1", "--history"], "no hub has run here yet"),
        (["mpi", "reviews"], "no token given"),
        (["recognition", "check", "--patient", "Patient/a.b", "--items", "GLU", "--token",
          "t", "--url", place.no_hub], "no hub answered"),
    ):
        done = typed(place, command, *args)
        one_line_error(done.returncode, done.stdout, done.stderr, expected)
    assert place.files() == before


def test_as_typed_a_silent_broker_is_given_up_within_seconds_by_default(place):
    started = time.monotonic()
    done = typed(place, [sys.executable, "-m", "hub.cli"], "topics", "--kafka", place.dead)
    one_line_error(done.returncode, done.stdout, done.stderr, "within 5s")
    assert time.monotonic() - started < 20


# --- hints name the command as it can be typed ---------------------------------------------

def test_hints_name_the_command_as_it_can_be_typed(tmp_path, monkeypatch):
    script = tmp_path / "venv" / "bin" / "hub"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "facility"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert hub_command() == str(script)  # not on PATH: the full path
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert hub_command() == "hub"
    other = tmp_path / "elsewhere" / "hub"  # another program called hub comes first
    other.parent.mkdir()
    shutil.copy(script, other)
    monkeypatch.setenv("PATH", f"{other.parent}:{script.parent}")
    assert hub_command() == str(script)


def test_a_hint_printed_by_a_real_process_names_its_full_path(place):
    script = Path(sys.executable).parent / "hub"
    if not script.is_file():
        pytest.skip("no hub script beside this Python (not installed in a venv)")
    done = typed(place, [str(script)], "facility", "show", "township-1", "--history")
    line = one_line_error(done.returncode, done.stdout, done.stderr, "no hub has run here")
    assert f"{script.absolute()} serve" in line
