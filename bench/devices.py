"""Remote-monitoring figures (``hub bench --only devices``), each beside a bare MQTT loop on
the same broker (the machine's Mosquitto, or ``HUB_BENCH_MQTT``):

1. Readings ingested per second through the MQTT device gateway: a burst of readings, from
   the meter's publish to the gateway's acknowledgement (durably accepted: journal
   committed), beside a bare paho subscriber that parses and acknowledges each message.
2. Alert latency, a reading published -> its alert on ``hie.alerts.v1``, at the rate of
   10,000 devices x 4 readings a day compressed into one hour (~11 readings/s), with 10,000
   devices registered and bound; every reading is critical for its resident, so each one
   raises an alert. Target: p99 < 1 s. Beside: the bare MQTT publish -> receive latency.

The whole hub runs in this process (journal, every projection, the monitor, the feed relay,
the device gateway), on SQLite and the bench's bundled broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import sqlalchemy as sa
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from adapters.devices.mqtt import MqttAddress
from hub import clock
from hub.config import Monitoring, Settings, Topics
from hub.log.topics import ensure_topics
from hub.monitoring import projection as mp
from hub.registry.consortium_file import read_consortium, to_document
from hub.service import Hub

DAY_RATE = 10_000 * 4 / 3600  # 10,000 devices x 4 readings a day, in one hour
# Readings in flight at once in the burst. Mosquitto keeps at most max_queued_messages
# (default 1,000) for a session and drops the rest: a burst beyond it would measure drops.
WINDOW = 500


def consortium_with_devices(path: Path, devices: int) -> None:
    """The demo consortium plus ``devices`` bound meters, 100 residents per team, all
    signed today (no missing-readings alerts during the measurement)."""
    doc = to_document(read_consortium(None))
    today = clock.today().isoformat()
    doc["teams"], doc["devices"] = [], []
    for t in range(devices // 100):
        fac = ("community-1", "community-2", "township-1", "township-2")[t % 4]
        residents = [{"patient": f"{fac}.b{t:03d}-{i:02d}", "signed": today,
                      "conditions": ["hypertension"]} for i in range(100)]
        doc["teams"].append({"id": f"bench-{t:03d}", "name": f"team {t}", "facility": fac,
                             "specialist": "county-1", "residents": residents})
        doc["devices"] += [{"id": f"bp-b{t:03d}-{i:02d}", "kind": "bp", "facility": fac,
                            "patient": r["patient"]} for i, r in enumerate(residents)]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")


def device_ids(devices: int) -> list[str]:
    return [f"bp-b{t:03d}-{i:02d}" for t in range(devices // 100) for i in range(100)]


class Meters:
    """A paho publisher (QoS 1) standing for every meter."""

    def __init__(self, address: MqttAddress) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-meters-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(address.host, address.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BareSubscriber:
    """The baseline: subscribe with QoS 1 and manual acknowledgement, parse, acknowledge."""

    def __init__(self, address: MqttAddress, topic: str) -> None:
        self.received: dict[str, float] = {}
        self.done = threading.Event()
        self.expect = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5,
                                  client_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
                                  manual_ack=True)
        ready = threading.Event()
        self.client.on_connect = lambda c, *_: (c.subscribe(topic, qos=1), ready.set())
        self.client.on_message = self._message
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        ready.wait(5)
        time.sleep(0.3)  # the SUBACK

    def _message(self, client: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        doc = orjson.loads(msg.payload)
        client.ack(msg.mid, msg.qos)
        self.received[doc["n"]] = time.perf_counter()
        if len(self.received) >= self.expect:
            self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(n: int, sbp: int, at_hours: float = 0.0) -> bytes:
    when = clock.now() - timedelta(hours=at_hours, seconds=n)
    return orjson.dumps({"n": str(n), "time": when.isoformat(), "systolic": sbp,
                         "diastolic": 80 if sbp < 180 else 112})


def bare_rate(address: MqttAddress, count: int) -> float:
    prefix = f"bare{uuid.uuid4().hex[:6]}"
    sub = BareSubscriber(address, f"{prefix}/hie/devices/+/readings")
    sub.expect = count
    meters = Meters(address)
    started = time.perf_counter()
    for n in range(count):
        while n - len(sub.received) >= WINDOW:
            time.sleep(0.001)
        meters.send(f"{prefix}/hie/devices/bp-{n % 100}/readings", reading(n, 120))
    sub.done.wait(120)
    rate = len(sub.received) / (time.perf_counter() - started)
    meters.close()
    sub.close()
    return rate


def bare_latency(address: MqttAddress, seconds: float) -> list[float]:
    prefix = f"bare{uuid.uuid4().hex[:6]}"
    sub = BareSubscriber(address, f"{prefix}/hie/devices/+/readings")
    meters = Meters(address)
    sent: dict[str, float] = {}
    count = int(seconds * DAY_RATE)
    sub.expect = count
    start = time.perf_counter()
    for n in range(count):
        time.sleep(max(0.0, start + n / DAY_RATE - time.perf_counter()))
        sent[str(n)] = time.perf_counter()
        meters.send(f"{prefix}/hie/devices/bp-{n}/readings", reading(n, 190))
    sub.done.wait(30)
    meters.close()
    sub.close()
    return [(sub.received[k] - sent[k]) * 1000 for k in sent if k in sub.received]


async def _devices_projected(hub: Hub, devices: int, timeout: float = 300) -> None:
    table = mp.MonitoringProjection().tables(sa.MetaData())[mp.DEVICES]

    def count() -> int:
        assert hub.store
        with hub.store.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0

    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(count) < devices:
        if time.monotonic() > deadline:
            raise TimeoutError("the registry's devices were not projected in time")
        await asyncio.sleep(0.5)


async def hub_figures(settings: Settings, mqtt_url: str, burst: int, seconds: float,
                      devices: int) -> tuple[float, list[float]]:
    """(readings/s through the gateway, alert latencies in ms)."""
    address = MqttAddress.parse(mqtt_url)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    consortium = settings.data_dir / "devices-consortium.yaml"
    consortium_with_devices(consortium, devices)
    s = settings.model_copy(update={
        "ack_after": "journal", "facilities_file": consortium,
        "database_url": f"sqlite:///{settings.data_dir / 'devices.db'}",
        "topics": Topics(inbound="dev.inbound", events="dev.events",
                         deadletter="dev.deadletter", lab="dev.lab", imaging="dev.imaging",
                         recognition="dev.recognition", alerts="dev.alerts"),
        "monitoring": Monitoring(mqtt_topic=f"{prefix}/hie/devices/+/readings",
                                 mqtt_client_id=f"hub-{prefix}", sla_hours=1000)})
    ensure_topics(s)
    ids = device_ids(devices)
    async with Hub(s, start_broker=False) as hub:
        hub.start_projections()
        await _devices_projected(hub, devices)
        await hub.start_mqtt(mqtt_url)
        meters = Meters(address)
        # 1. a burst of ordinary readings
        started = time.perf_counter()
        for n in range(burst):
            while n - hub.mqtt.acked >= WINDOW:
                await asyncio.sleep(0.005)
            meters.send(f"{prefix}/hie/devices/{ids[n % devices]}/readings",
                        reading(n, 124, at_hours=48))
        while hub.mqtt.acked < burst and time.perf_counter() - started < 300:
            await asyncio.sleep(0.005)
        rate = hub.mqtt.acked / (time.perf_counter() - started)
        # 2. critical readings at the day's rate, each from a resident with no alert yet
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
        await consumer.start()
        parts = [TopicPartition(s.topics.alerts, p)
                 for p in consumer.partitions_for_topic(s.topics.alerts) or ()]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        sent: dict[str, float] = {}
        latencies: list[float] = []
        count = min(int(seconds * DAY_RATE), devices - burst)
        patients = {ids[i]: hub.care.device(ids[i]).patient for i in range(devices)}

        async def collect() -> None:
            while len(latencies) < count:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for records in batch.values():
                    for m in records:
                        msg = orjson.loads(m.value)
                        key = msg["patient"].split("/", 1)[1]
                        if msg["change"] == "opened" and key in sent:
                            latencies.append((now - sent.pop(key)) * 1000)

        collector = asyncio.create_task(collect())
        start = time.perf_counter()
        for k in range(count):
            await asyncio.sleep(max(0.0, start + k / DAY_RATE - time.perf_counter()))
            device = ids[burst + k]
            sent[patients[device] or ""] = time.perf_counter()
            meters.send(f"{prefix}/hie/devices/{device}/readings", reading(10 ** 6 + k, 190))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector, 30)
        await consumer.stop()
        meters.close()
    return rate, latencies


def figures(settings: Settings, mqtt_url: str, burst: int = 2000, seconds: float = 60,
            devices: int = 10_000) -> dict[str, object]:
    """Every remote-monitoring figure, hub and baseline, measured one after the other."""
    from hub.aio import run_loop

    address = MqttAddress.parse(mqtt_url)
    rate, latencies = run_loop(hub_figures(settings, mqtt_url, burst, seconds, devices))
    return {"rate": rate, "bare_rate": bare_rate(address, burst), "latencies": latencies,
            "bare_latencies": bare_latency(address, min(seconds, 20)),
            "expected": int(min(seconds * DAY_RATE, devices - burst))}
