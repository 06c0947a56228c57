"""The machine's MQTT broker (Mosquitto at 127.0.0.1:1883) for the device-gateway tests."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.log.broker import free_port

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
MQTT_URL = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


def require_mqtt() -> None:
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT} (install and start Mosquitto "
                    "to run the device-gateway tests)")


def unique_prefix() -> str:
    """A topic prefix no other test uses: tests share the machine's broker."""
    return f"t{uuid.uuid4().hex[:8]}"


class Meter:
    """A home meter: publishes readings with QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, prefix: str, port: int = MQTT_PORT) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"meter-{uuid.uuid4().hex[:8]}")
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()

    def send(self, device: str, reading: dict | bytes) -> None:
        payload = reading if isinstance(reading, bytes) else orjson.dumps(reading)
        info = self.client.publish(f"{self.prefix}/hie/devices/{device}/readings", payload,
                                   qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class OwnMosquitto:
    """A Mosquitto of the test's own, on a free port, persisting its sessions to a folder:
    it can be stopped and started again (the machine's broker cannot)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.skip("no mosquitto binary (Debian package mosquitto) to restart a broker")
        self.binary = binary
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            # As this user: Mosquitto run as root would switch to user mosquitto, who may not
            # write the persistence folder.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nmax_queued_messages 10000\n", "utf-8")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its sessions and queued messages to disk and exits."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def meter(self, prefix: str) -> Meter:
        return Meter(prefix, self.port)
