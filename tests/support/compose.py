"""deploy/docker-compose.yml with its local override, as one project per test.

Every port is picked free on 127.0.0.1 (the containers share the host's network), so the
project never collides with the machine's own services or with another test's.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from hub.log.broker import free_port
from tests.support.containers import ROOT, image

DEPLOY = ROOT / "deploy"
FILES = ("docker-compose.yml", "docker-compose.local.yml")


class ComposeProject:
    """The hub's roles as containers: broker, PostgreSQL, two gateways, one ingest stage,
    three projection processes. Use ``with ComposeProject() as c:``; leaving removes every
    container and volume of the project."""

    def __init__(self) -> None:
        self.name = f"hie{uuid.uuid4().hex[:8]}"
        self.broker_port, self.pg_port = free_port(), free_port()
        self.gateway_ports = [free_port(), free_port()]
        self.env = {**os.environ, "HUB_IMAGE": image("hub"),
                    "HUB_BROKER_IMAGE": image("broker"), "HUB_POSTGRES_IMAGE": image("postgres"),
                    "HUB_BROKER_PORT": str(self.broker_port), "HUB_PG_PORT": str(self.pg_port),
                    "HUB_GATEWAY_1_PORT": str(self.gateway_ports[0]),
                    "HUB_GATEWAY_2_PORT": str(self.gateway_ports[1])}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def gateways(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.gateway_ports]

    def db_url(self, database: str = "hub") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{database}"

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        files = [a for f in FILES for a in ("-f", str(DEPLOY / f))]
        done = subprocess.run(["docker-compose", "-p", self.name, *files, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode:
            raise AssertionError(f"docker-compose {' '.join(args)}: {done.stderr[-2000:]}")
        return done

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def docker(self, *args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                              timeout=120).stdout

    def cpu_seconds(self, service: str) -> float:
        """CPU time the service's container has used so far (its cgroup's account), so
        rates can be given per CPU-second: on a shared machine wall-clock rates say more
        about the neighbours than about the hub."""
        cid = self.docker("inspect", "-f", "{{.Id}}", self.container(service)).strip()
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        if v1.exists():
            return int(v1.read_text()) / 1e9
        v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
        usage = dict(line.split() for line in v2.read_text().splitlines())
        return int(usage["usage_usec"]) / 1e6

    def wait_ready(self, timeout: float = 120) -> None:
        """Until both gateways answer /ready with 200 (broker and store reachable)."""
        deadline = time.monotonic() + timeout
        for base in self.gateways:
            while True:
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{base} not ready in {timeout} s:\n{self.logs()}")
                time.sleep(0.5)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "30").stdout

    def __enter__(self) -> ComposeProject:
        self.compose("up", "-d")
        return self

    def __exit__(self, *exc) -> None:
        self.compose("down", "-v", "--timeout", "5")

