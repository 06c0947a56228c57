"""Single-resource PUTs at an offered rate from many clients: the gateway vs a bare endpoint.

Before the micro-batching publisher, at 300 PUT/s offered, the gateway held ~100/s, p99
1.8-3.8 s, with hundreds of 503s.
Both servers run as their own processes on the same broker; the load comes from one lean
client process part (http.client in threads, keep-alive, bodies prepared in advance), each
client offering ``rate / clients`` requests a second on a fixed schedule.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from hub.config import Settings
from hub.log.broker import free_port
from hub.registry.consortium_file import load_directory


@dataclass
class PutRun:
    """What the clients saw: sustained rate of 2xx answers, their latencies, statuses."""

    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)  # request -> 2xx (perf_counter)


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    """Wait until a server on ``port`` answers /healthz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not come up")


def offer(port: int, requests: list[tuple[str, str, bytes]], clients: int, rate: float
          ) -> PutRun:
    """PUT each (token, path, body) once, request k due at start + k / rate.

    A client that falls behind sends its next request as soon as it can, so the offered
    rate drops to what the server sustains; latency is measured from the send.
    """
    lock = threading.Lock()
    run = PutRun(0.0)
    finished: list[float] = []
    started = time.perf_counter() + 0.2

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat: list[float] = []
        statuses: dict[int, int] = {}
        answered: dict[int, float] = {}
        last = started
        for k in range(n, len(requests), clients):
            token, path, body = requests[k]
            delay = started + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            conn.request("PUT", path, body=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
            resp = conn.getresponse()
            resp.read()
            last = time.perf_counter()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if 200 <= resp.status < 300:
                lat.append(1000 * (last - sent))
                answered[k] = last
        conn.close()
        with lock:
            run.latencies_ms.extend(lat)
            run.answered.update(answered)
            for s, c in statuses.items():
                run.statuses[s] = run.statuses.get(s, 0) + c
            finished.append(last)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.rate = len(run.latencies_ms) / (max(finished) - started)
    return run


def put_requests(items: list[tuple[str, dict]]) -> list[tuple[str, str, bytes]]:
    directory = load_directory(None)
    return [(directory.get(fid).token, f"/fhir/{res['resourceType']}/{res['id']}",
             orjson.dumps(res)) for fid, res in items]


def _serve(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)


def _measure(server: subprocess.Popen, port: int, requests: list[tuple[str, str, bytes]],
             clients: int, rate: float) -> PutRun:
    try:
        wait_healthy(port)
        # Warm-up, not measured: connections, metadata, first-use imports in the server.
        offer(port, requests[:clients], clients, rate)
        return offer(port, requests[clients:], clients, rate)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:  # its figures are taken; do not wait on shutdown
            server.kill()
            server.wait(10)


def gateway_puts(settings: Settings, items: list[tuple[str, dict]], workdir: Path,
                 clients: int = 50, rate: float = 300.0, whole_hub: bool = False) -> PutRun:
    """The hub's gateway alone (no ingest, no projections, as in the ingest figure), or
    the whole hub in one process (``whole_hub``: projections share its event loop)."""
    port = free_port()
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": settings.bootstrap,
           "HUB_DATABASE_URL": f"sqlite:///{workdir / 'put.db'}", "HUB_DATA_DIR": str(workdir),
           "HUB_CONSUMER_GROUPS": "false"}
    parts = [] if whole_hub else ["--no-ingest", "--no-projections"]
    if not whole_hub:
        # The gateway alone has no journal in its process: on the bundled broker (memory
        # only) a 2xx would wait for a journal commit that never comes. Its own work is
        # the figure, so it answers once the broker has the event.
        env["HUB_ACK_AFTER"] = "broker"
    server = _serve(["-m", "hub.cli", "serve", "--port", str(port), *parts], env)
    return _measure(server, port, put_requests(items), clients, rate)


def bare_puts(settings: Settings, items: list[tuple[str, dict]], topic: str,
              clients: int = 50, rate: float = 300.0) -> PutRun:
    port = free_port()
    server = _serve(["-m", "bench.bare_gateway", "--port", str(port), "--bootstrap",
                     settings.bootstrap, "--topic", topic], dict(os.environ))
    return _measure(server, port, put_requests(items), clients, rate)
