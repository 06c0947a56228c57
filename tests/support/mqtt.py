"""The machine's MQTT broker (Mosquitto at 127.0.0.1:1883) for the device-gateway tests."""

from __future__ import annotations

import socket
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

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

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"meter-{uuid.uuid4().hex[:8]}")
        self.client.connect(MQTT_HOST, MQTT_PORT)
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
