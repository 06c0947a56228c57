"""The MQTT device gateway's pure parts: which device a topic names, the broker address."""

from __future__ import annotations

import pytest

from adapters.devices.mqtt import MqttAddress, device_of
from hub.errors import ConfigError


@pytest.mark.parametrize(("topic", "pattern", "device"), [
    ("hie/devices/bp-1/readings", "hie/devices/+/readings", "bp-1"),
    ("t1/hie/devices/glu-9/readings", "t1/hie/devices/+/readings", "glu-9"),
    ("hie/devices/bp-1/status", "hie/devices/+/readings", None),
    ("hie/devices/readings", "hie/devices/+/readings", None),
    ("hie/devices//readings", "hie/devices/+/readings", None),
    ("other/devices/bp-1/readings", "hie/devices/+/readings", None),
])
def test_the_device_a_topic_names(topic, pattern, device):
    assert device_of(topic, pattern) == device


@pytest.mark.parametrize(("url", "host", "port"), [
    ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883), ("broker.local", "broker.local", 1883),
    ("tcp://10.0.0.5:8883", "10.0.0.5", 8883)])
def test_broker_addresses(url, host, port):
    assert MqttAddress.parse(url) == MqttAddress(host, port)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1883", "mqtt://:1883",
                                 "mqtt://127.0.0.1:port"])
def test_bad_broker_addresses(url):
    with pytest.raises(ConfigError, match="MQTT address"):
        MqttAddress.parse(url)
