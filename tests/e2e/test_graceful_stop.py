"""Durable acknowledgement and graceful stop of ``hub serve`` with its bundled broker.

The bundled broker keeps the log in memory only, so what a 2xx promises must be in the SQL
journal when it is answered, and a stop must leave every projection caught up with it: the
restarted broker is empty, and the hub comes back from SQL alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hub.log.broker import free_port
from tests.support.hub_server import auth
from tests.support.resources import observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TOKEN = "demo-secret-township-1"
SOURCE = "urn:hie:facility:township-1"


class Served:
    """``hub serve`` (or ``hub project``) as an operator runs it, output to a file."""

    def __init__(self, data_dir: Path, *args: str, api_port: int | None = None,
                 broker_port: int | None = None, **env: str) -> None:
        self.api_port = api_port or free_port()
        self.broker_port = broker_port or free_port()
        self.log = data_dir / f"hub-{time.monotonic_ns()}.log"
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("HUB_") or k == "HUB_CLOCK_OFFSET"}
        clean.update({"HUB_DATA_DIR": str(data_dir), "HUB_API_PORT": str(self.api_port),
                      "HUB_EMBEDDED_BROKER_PORT": str(self.broker_port),
                      "HUB_CONSUMER_GROUPS": "false", **env})
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "hub.cli", *args], env=clean,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.api_port}"

    def output(self) -> str:
        return self.log.read_text()

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base) as c:
            while True:
                assert self.proc.poll() is None, self.output()
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, self.output()
                await asyncio.sleep(0.2)

    async def exited(self, timeout: float) -> float:
        """Seconds until the process exited (fails past ``timeout``)."""
        started = time.monotonic()
        while self.proc.poll() is None:
            if time.monotonic() - started > timeout:
                self.proc.kill()
                raise AssertionError(f"still running after {timeout} s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def journaled(data_dir: Path, where: str = "1 = 1", *args: object) -> int:
    with sqlite3.connect(data_dir / "hub.db") as db:
        return db.execute(f"SELECT count(*) FROM hub_journal WHERE {where}", args).fetchone()[0]


async def test_stop_under_load_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    """Before: of ~16,500 entries answered 201, ~4,500 were 404 after a restart."""
    hub = Served(tmp_path, "serve")
    acked: list[str] = []
    refused = 0
    try:
        await hub.ready()
        stop_loading = asyncio.Event()

        async def client(n: int) -> None:
            nonlocal refused
            async with httpx.AsyncClient(base_url=hub.base, headers=auth(TOKEN),
                                         timeout=30) as c:
                i = 0
                while not stop_loading.is_set():
                    resources = [patient(f"p{n}", f"MRN{n}")] if i == 0 else []
                    resources += [observation(f"o{n}-{i}-{k}", pid=f"p{n}", value=k)
                                  for k in range(20 - len(resources))]
                    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
                        {"resource": r, "request": {"method": "PUT",
                                                    "url": f"{r['resourceType']}/{r['id']}"}}
                        for r in resources]}
                    i += 1
                    try:
                        r = await c.post("/fhir", json=bundle)
                    except httpx.TransportError:
                        return  # the hub has gone: the request was not answered
                    if r.status_code != 200:
                        assert r.status_code == 503, r.text
                        assert r.headers["Retry-After"]
                        refused += 1
                        await asyncio.sleep(0.05)
                        continue
                    for res, entry in zip(resources, r.json()["entry"], strict=True):
                        assert entry["response"]["status"] == "201 Created", entry
                        acked.append(f"{res['resourceType']}/township-1.{res['id']}")

        loaders = [asyncio.create_task(client(n)) for n in range(10)]
        await asyncio.sleep(4)
        assert acked, hub.output()
        at_signal = len(acked)
        hub.proc.send_signal(signal.SIGINT)
        took = await hub.exited(timeout=35)
        stop_loading.set()
        await asyncio.gather(*loaders)
        assert hub.proc.returncode == 0, hub.output()
        assert "Traceback" not in hub.output(), hub.output()
        print(f"{len(acked)} entries acknowledged ({len(acked) - at_signal} after the signal), "
              f"{refused} Bundles refused while stopping, stopped in {took:.1f} s")
        # Nothing answered 201 is missing from the journal, nothing else is in it.
        assert journaled(tmp_path, "source = ?", SOURCE) == len(acked)

        # The bundled broker comes back empty: everything is read from SQL.
        hub = Served(tmp_path, "serve")
        await hub.ready()
        missing: list[str] = []
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(base_url=hub.base, headers=auth(TOKEN), timeout=30,
                                     limits=limits) as c:
            sem = asyncio.Semaphore(10)

            async def read(path: str) -> None:
                async with sem:
                    if (await c.get(f"/fhir/{path}")).status_code != 200:
                        missing.append(path)

            await asyncio.gather(*(read(p) for p in acked))
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged entries are gone"
    finally:
        hub.kill()


async def test_a_201_means_the_journal_has_the_event(tmp_path: Path) -> None:
    """In process (journal runner's commits) and across processes (a poll of the journal),
    and a 503, never a 201, when no journal commits within the bound."""
    hub = Served(tmp_path, "serve", "--no-ingest")
    try:
        await hub.ready()
        async with httpx.AsyncClient(base_url=hub.base, headers=auth(TOKEN), timeout=30) as c:
            for i in range(10):
                res = observation(f"d{i}", value=i)
                r = await c.put(f"/fhir/Observation/{res['id']}", json=res)
                assert r.status_code == 201, r.text
                assert journaled(tmp_path, "subject = ?", f"Observation/d{i}") == 1
        hub.proc.send_signal(signal.SIGINT)
        await hub.exited(timeout=35)
    finally:
        hub.kill()

    # No journal in the serving process: the gateway polls the table for its events.
    hub = Served(tmp_path, "serve", "--no-projections", "--no-ingest",
                 HUB_ACK_TIMEOUT_S="1")
    project = None
    try:
        await hub.ready()
        async with httpx.AsyncClient(base_url=hub.base, headers=auth(TOKEN), timeout=30) as c:
            res = observation("lonely")
            r = await c.put("/fhir/Observation/lonely", json=res)
            assert r.status_code == 503, r.text  # nobody journals: not acknowledged
            assert r.headers["Retry-After"] == "1"
            assert "not acknowledged" in r.text
            project = Served(tmp_path, "project", "journal",
                             HUB_KAFKA_BOOTSTRAP=f"127.0.0.1:{hub.broker_port}")
            deadline = time.monotonic() + 60
            while True:  # until the journal runner has joined
                res = observation("joined")
                r = await c.put("/fhir/Observation/joined", json=res)
                if r.status_code == 201:
                    break
                assert r.status_code == 503 and time.monotonic() < deadline, r.text
            assert journaled(tmp_path, "subject = ?", "Observation/joined") >= 1
            res = observation("polled")
            r = await c.put("/fhir/Observation/polled", json=res)
            assert r.status_code == 201, r.text
            assert journaled(tmp_path, "subject = ?", "Observation/polled") == 1
    finally:
        hub.kill()
        if project is not None:
            project.kill()


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    # No journal runs, so an accepted PUT waits for one: the first signal's drain waits too.
    hub = Served(tmp_path, "serve", "--no-projections", "--no-ingest",
                 HUB_ACK_TIMEOUT_S="60", HUB_STOP_TIMEOUT_S="60")
    try:
        await hub.ready()
        async with httpx.AsyncClient(base_url=hub.base, headers=auth(TOKEN), timeout=90) as c:
            res = observation("waits")
            pending = asyncio.create_task(c.put("/fhir/Observation/waits", json=res))
            await asyncio.sleep(1.0)
            hub.proc.send_signal(signal.SIGINT)
            await asyncio.sleep(1.0)
            assert hub.proc.poll() is None, "the first signal should drain, not exit"
            # Draining: a new request is refused, with when to come back.
            r = await c.get("/fhir/metadata")
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
            hub.proc.send_signal(signal.SIGINT)
            took = await hub.exited(timeout=5)
            assert took < 2, took
            assert hub.proc.returncode == 128 + signal.SIGINT
            with pytest.raises(httpx.TransportError):
                await pending
    finally:
        hub.kill()
