"""The MQTT device gateway: what networked home meters publish to, unchanged.

Meters publish each reading (JSON, see ``hub.monitoring.readings``) with QoS 1 to
``hie/devices/<device id>/readings``. The gateway holds one MQTT v5 session with a stable
client id, ``clean_start`` false and a session that outlives a disconnect, and subscribes
with QoS 1; the broker keeps what arrives while the gateway is away and resends what the
gateway received but did not acknowledge.

Contract: a message is acknowledged (PUBACK) only once the intake has an answer that will
not change: the reading is durably accepted, or its refusal is committed as a dead letter.
When the hub cannot give such an answer (broker or journal away), the message is left
unacknowledged and the gateway reconnects after a pause, so the broker delivers it again.
Nothing valid is lost if the MQTT broker, the gateway or the hub restarts.

paho-mqtt's network loop runs in its own thread; each message is handed to the hub's event
loop, and the acknowledgement goes back through paho (thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.errors import ConfigError
from hub.monitoring.intake import DeviceIntake

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps a week of readings for an absent hub
RETRY_PAUSE_S = 1.0


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> MqttAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ConfigError(f"MQTT address {url!r}: expected mqtt://HOST:PORT")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise ConfigError(f"MQTT address {url!r}: {exc}") from exc
        return cls(parts.hostname, port)


def device_of(topic: str, pattern: str = "hie/devices/+/readings") -> str | None:
    """The device a topic names: the level the subscription's ``+`` stands for
    (``hie/devices/<id>/readings`` -> ``<id>``)."""
    parts, wanted = topic.split("/"), pattern.split("/")
    if len(parts) != len(wanted) or "+" not in wanted:
        return None
    if any(w not in ("+", p) for w, p in zip(wanted, parts, strict=True)):
        return None
    return parts[wanted.index("+")] or None


class MqttDeviceGateway:
    def __init__(self, intake: DeviceIntake, url: str, topic: str = "hie/devices/+/readings",
                 client_id: str = "hie-hub-devices") -> None:
        self.intake = intake
        self.address = MqttAddress.parse(url)
        self.topic = topic
        self.client_id = client_id
        self.connected = threading.Event()
        self.received = 0
        self.acked = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._retrying = False
        self._inflight: set[asyncio.Future] = set()

    async def start(self, wait_s: float = 5.0) -> None:
        """Connect (retrying in the background if the broker is away) and subscribe."""
        self._loop = asyncio.get_running_loop()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 10)
        self._client = c
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        c.connect_async(self.address.host, self.address.port, keepalive=30,
                        clean_start=False, properties=props)
        c.loop_start()
        if not await asyncio.to_thread(self.connected.wait, wait_s):
            log.warning("MQTT broker %s:%d does not answer yet; the device gateway keeps "
                        "trying", self.address.host, self.address.port)

    async def stop(self) -> None:
        """Finish the messages being handled (their acknowledgements go out), then leave:
        the session stays with the broker, unacknowledged messages come back next time."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=10)
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)

    # --- paho's thread --------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags,
                    reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker refused the device gateway: %s", reason)
            return
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("device gateway connected to %s:%d (session present: %s)",
                 self.address.host, self.address.port, flags.session_present)

    def _on_disconnect(self, *_: object) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        assert self._loop is not None
        self.received += 1
        fut = asyncio.run_coroutine_threadsafe(
            self._handle(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup)),
            self._loop)
        wrapped = asyncio.wrap_future(fut, loop=self._loop)
        self._loop.call_soon_threadsafe(self._track, wrapped)

    def _track(self, fut: asyncio.Future) -> None:
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)

    # --- the hub's event loop -------------------------------------------------------------

    async def _handle(self, topic: str, payload: bytes, mid: int, qos: int, dup: bool
                      ) -> None:
        device = device_of(topic, self.topic)
        if device is None:  # the subscription's pattern names a device; anything else is
            self._ack(mid, qos)  # not a reading and cannot become one by waiting
            return
        outcome = await self.intake.handle(device, payload, "mqtt", redelivery=dup)
        if outcome.status == "unavailable":
            log.warning("device %s: not acknowledged (%s); the broker will resend it",
                        device, outcome.detail)
            await self._redeliver_later()
            return
        self._ack(mid, qos)

    def _ack(self, mid: int, qos: int) -> None:
        if self._client is not None and qos > 0:
            self._client.ack(mid, qos)
        self.acked += 1

    async def _redeliver_later(self) -> None:
        """MQTT resends an unacknowledged message only on a new connection: reconnect once
        after a pause, however many messages failed meanwhile."""
        if self._retrying or self._client is None:
            return
        self._retrying = True
        try:
            await asyncio.sleep(RETRY_PAUSE_S)
            await asyncio.to_thread(self._client.reconnect)
        except OSError as exc:
            log.warning("device gateway: reconnect failed (%s); paho keeps trying", exc)
        finally:
            self._retrying = False
