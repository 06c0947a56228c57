"""Console page loads with the demo running: p50/p95 beside a bare FastAPI + Jinja2 page.

``hub demo`` runs in its own process (its bundled broker, a fresh SQLite store, the
simulated consortium publishing at its default rate) for the whole measurement. Logged in
as the demo's consortium operators, the bench loads each console page in turn, once a
second, and after each the bare page (bench/bare_console.py, another process) and the demo
hub's ``/healthz``, so all three see the same machine at the same moments: ``/healthz``
shows what any answer costs from a process whose event loop the demo keeps busy. A load
is one GET of the page's HTML over a kept-alive connection, from sending the request to
the last byte (the page's CSS and scripts are static files a browser caches).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

from bench.put_rate import wait_healthy
from hub.log.broker import free_port

PAGES = ("/console", "/console/deadletters", "/console/events?q=Observation/x",
         "/console/recognition", "/console/reading", "/console/referrals",
         "/console/monitoring", "/console/registry")
OPERATORS = "demo-app-token-consortium-ops"


def _login(client: httpx.Client) -> None:
    form = client.get("/console/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)  # type: ignore
    done = client.post("/console/login", data={"nonce": nonce, "token": OPERATORS})
    if done.status_code != 303:
        raise RuntimeError(f"console login answered {done.status_code}")


def _timed(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    r = client.get(path)
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}")
    return (time.perf_counter() - started) * 1000


def console_loads(console: Console, minutes: float
                  ) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Per console page its load times (ms), the bare page's, and the demo hub's own
    ``/healthz`` (what any answer of that busy process costs), over ``minutes``."""
    hub_port, bare_port = free_port(), free_port()
    hub_ms: dict[str, list[float]] = {p: [] for p in PAGES}
    bare_ms: list[float] = []
    healthz_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-console-") as tmp:
        log = (Path(tmp) / "demo.log").open("wb")
        demo = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "demo", "--port", str(hub_port), "--data-dir",
             tmp, "--seconds", str(minutes * 60 + 120)], stdout=log, stderr=subprocess.STDOUT)
        bare = subprocess.Popen([sys.executable, "-m", "bench.bare_console", "--port",
                                 str(bare_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            wait_healthy(hub_port, timeout=180)
            wait_healthy(bare_port)
            with httpx.Client(base_url=f"http://127.0.0.1:{hub_port}", timeout=30) as hub, \
                    httpx.Client(base_url=f"http://127.0.0.1:{bare_port}", timeout=30) as b:
                _login(hub)
                for path in PAGES:  # warm-up, not measured: templates compile on first use
                    _timed(hub, path)
                    _timed(b, "/page")
                console.print(f"loading the console's {len(PAGES)} pages once a second for "
                              f"{minutes:g} min while the demo runs ...")
                deadline = time.monotonic() + minutes * 60
                while time.monotonic() < deadline:
                    for path in PAGES:
                        hub_ms[path].append(_timed(hub, path))
                        bare_ms.append(_timed(b, "/page"))
                        healthz_ms.append(_timed(hub, "/healthz"))
                        time.sleep(1)
        finally:
            for process in (demo, bare):
                process.terminate()
            for process in (demo, bare):
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            log.close()
    return hub_ms, bare_ms, healthz_ms
