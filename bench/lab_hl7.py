"""Lab figures: the lab projection's apply rate, and the MLLP round trip.

Both print beside a baseline measured in the same run: for the projection, parsing the same
events (with fhir.resources, the FHIR parser; and with orjson, the hub's fast path); for
MLLP, a bare listener that frames and acknowledges without mapping or publishing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from fhir.resources.R4B import get_fhir_model_class

from adapters.hl7v2.codec import END, START, ack, frame
from adapters.hl7v2.intake import Hl7Intake
from adapters.hl7v2.mllp import MllpServer
from bench.workload import fill_journal
from hub.config import Settings
from hub.engine.rebuild import rebuild
from hub.lab.projection import LabProjection
from hub.log.producer import Publisher
from hub.signing import demo_signer
from hub.store.db import open_store
from hub.store.schema import journal


def lab_rates(workdir: Path, envs: list) -> tuple[float, float, float]:
    """(lab projection ev/s, fhir.resources parse ev/s, orjson parse ev/s) over one journal."""
    store = open_store(f"sqlite:///{workdir / 'lab.db'}")
    try:
        fill_journal(store, envs)
        with store.connect() as conn:
            rows = conn.execute(sa.select(journal.c.data).order_by(journal.c.seq)
                                ).scalars().all()
        started = time.perf_counter()
        for data in rows:
            res = orjson.loads(data)
            get_fhir_model_class(res["resourceType"]).model_validate(res)
        fhir_rate = len(rows) / (time.perf_counter() - started)
        started = time.perf_counter()
        for data in rows:
            orjson.loads(data)
        orjson_rate = len(rows) / (time.perf_counter() - started)
        started = time.perf_counter()
        n = rebuild(store, LabProjection())
        lab_rate = n / (time.perf_counter() - started)
    finally:
        store.dispose()
    return lab_rate, fhir_rate, orjson_rate


class _BareIntake:
    """Frames and acknowledges, nothing else: the floor under any MLLP listener."""

    async def handle(self, raw: bytes) -> tuple[bytes, str, str]:
        return ack(raw.decode("utf-8", "replace"), "AA"), "AA", ""


def _client(port: int, messages: list[bytes], rate: float) -> list[float]:
    sock = socket.create_connection(("127.0.0.1", port))
    out = []
    try:
        start = time.perf_counter()
        for i, m in enumerate(messages):
            due = start + i / rate
            if (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            t0 = time.perf_counter()
            sock.sendall(frame(m))
            buf = b""
            while not buf.endswith(END):
                buf += sock.recv(65536)
            assert START in buf and b"MSA|AA" in buf, buf[:200]
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        sock.close()
    return out


async def mllp_round_trips(settings: Settings, messages: list[bytes], rate: float = 100
                           ) -> tuple[list[float], list[float]]:
    """(hub ms, bare ms) per message, paced at ``rate`` messages/s on one connection."""
    publisher = await Publisher(settings).start()
    try:
        results = []
        store = open_store(settings.db_url)
        for intake in (Hl7Intake(settings, "township-1", demo_signer("township-1"), publisher,
                                 store),
                       _BareIntake()):
            server = MllpServer(intake, "127.0.0.1", 0)  # type: ignore[arg-type]
            await server.start()
            try:
                results.append(await asyncio.to_thread(_client, server.port, messages, rate))
            finally:
                await server.stop()
    finally:
        await publisher.stop()
    return results[0], results[1]


ORU = ("MSH|^~\\&|LIS|township-1|HUB|HIE|20261101083000||ORU^R01|{ctl}|P|2.5.1|||||CHN|"
       "UNICODE UTF-8\r"
       "PID|1||P{pid}^^^township-1^MR||张^伟||19600305|M\r"
       "OBR|1|ORD{ctl}|{ctl}|24323-8^Comprehensive metabolic panel^LN|||20261101080000"
       "|||||||20261101080500|BLD^静脉血|||||||20261101083000|||F\r"
       "OBX|1|NM|15074-8^Glucose^LN||{glucose}|mmol/L|3.9-6.1||||F|||20261101080000\r"
       "OBX|2|NM|14682-9^Creatinine^LN||88|umol/L|57-111||||F\r")


def oru_messages(n: int) -> list[bytes]:
    return [ORU.format(ctl=f"B{i}", pid=i % 500, glucose=f"{5 + i % 40 / 10:.1f}").encode()
            for i in range(n)]
