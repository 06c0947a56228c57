"""An LIS feeding the hub over MLLP: a real MLLP client (python-hl7's), the listener, the
real broker, the ingest stage, the lab projection; bad messages get a NACK with the reason
and are dead-lettered while everything accepted stays."""

from __future__ import annotations

import asyncio
import dataclasses

import hl7
import httpx
import pytest
from hl7.client import MLLPClient
from typer.testing import CliRunner

from hub.cli import app
from hub.facilities import Facility
from hub.log.inspect import read_deadletters
from hub.registry.consortium_file import read_consortium, write_consortium
from tests.support.events import read_json_topic
from tests.support.hl7_messages import adt, oru, pid
from tests.support.hub_server import auth, eventually, mllp_listener, running_hub

pytestmark = [pytest.mark.e2e, pytest.mark.contract]


def send_all(port: int, messages: list[bytes]) -> list[hl7.Message]:
    """What the LIS does: one connection, a message, wait for its ACK, the next."""
    client = MLLPClient("127.0.0.1", port)
    try:
        replies = []
        for raw in messages:
            # python-hl7's client encodes str; bytes go out as they are (GB18030 here).
            reply = client.send(b"\x0b" + raw + b"\x1c\x0d")
            replies.append(hl7.parse(reply.decode("utf-8", "replace").strip("\x0b\x1c\r")))
        return replies
    finally:
        client.close()


async def test_lis_over_mllp(make_settings, tmp_path):
    settings = make_settings()
    async with running_hub(settings) as (hub, base):
        async with mllp_listener(settings, hub) as server:
            messages = [
                adt().encode(),
                oru(charset="GB18030").encode("gb18030"),  # Chinese text in GB18030
                oru(control="BAD1", glucose="").encode(),  # OBX without a value
                oru(control="BAD2")[:60].encode(),  # truncated
                adt(control="BAD3").replace("ADT^A04", "ORM^O01").encode(),  # unknown type
                oru(control="BAD4", patient=pid(mrn="", national_id=None)).encode(),
                # the LIS reuses order LAB1 for another patient: refused, never moved
                oru(control="BAD5", glucose="9.9", patient=pid(mrn="P002", name="李^娜",
                                                              national_id=None)).encode(),
                # a corrected glucose, later: supersedes the first
                oru(control="ORU2", glucose="6.8", status="C", when="20261101093000").encode(),
            ]
            replies = await asyncio.to_thread(send_all, server.port, messages)
        codes = [str(r.segment("MSA")[1]) for r in replies]
        assert codes == ["AA", "AA", "AE", "AR", "AR", "AE", "AE", "AA"]
        reasons = [str(r.segment("MSA")[3]) for r in replies]
        assert "has no value" in reasons[2] and "truncated" in reasons[3]
        assert "unsupported message type ORM\\S\\O01" in reasons[4]  # ^ escaped as \S\
        assert "patient without identifiers" in reasons[5]
        assert reasons[6].startswith("these results belong to patient P001, not P002: ")
        assert "Observation/LAB1-1-" in reasons[6]
        assert [str(r.segment("MSA")[2]) for r in replies][:3] == ["ADT1", "ORU1", "BAD1"]

        dead = await read_deadletters(settings, 20)
        hl7_dead = [d for d in dead if d["reason"].startswith(("AE:", "AR:"))]
        assert len(hl7_dead) == 5

        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1")) as c:
            async def corrected() -> bool:
                r = await c.get("/fhir/Observation", params={
                    "patient": "township-1.P001", "code": "15074-8"})
                entries = r.json().get("entry", [])
                return [e["resource"]["valueQuantity"]["value"] for e in entries] == [6.8]

            await eventually(corrected)

            async def registered() -> bool:  # projections run independently: wait for it
                return (await c.get("/fhir/Patient/township-1.P001")).status_code == 200

            await eventually(registered)
            # the refused message published nothing: P002 has no results, no record
            assert (await c.get("/fhir/Observation", params={
                "patient": "township-1.P002"})).json().get("entry", []) == []
            assert (await c.get("/fhir/Patient/township-1.P002")).status_code == 404
            patient = (await c.get("/fhir/Patient/township-1.P001")).json()
            assert patient["name"][0]["text"] == "张伟"
            summary = (await c.get("/fhir/Patient/township-1.P001/$lab-summary")).json()
            by = {a["analyte"]: a for a in summary["analytes"]}
            assert by["glucose"]["latest"]["status"] == "corrected"
            assert by["creatinine"]["latest"]["flag"] == "L"
            assert by["glucose"]["latest"]["specimen"] == "静脉血"

        # File mode: the same messages from a file, with a progress bar and a summary.
        batch = tmp_path / "batch.hl7"
        batch.write_bytes(b"".join(m + b"\r" for m in messages))
        # The hub's store (the claims): the import refuses BAD5 again, as the listener did.
        env = {"HUB_KAFKA_BOOTSTRAP": settings.bootstrap, "HUB_DATABASE_URL": settings.db_url,
               "HUB_TOPIC_INBOUND": settings.topics.inbound,
               "HUB_TOPIC_DEADLETTER": settings.topics.deadletter, "COLUMNS": "200"}
        result = await asyncio.to_thread(CliRunner().invoke, app, [
            "hl7-import", str(batch), "--facility", "township-1"], env=env)
        assert result.exit_code == 2, result.output  # some refused
        assert "3 messages accepted" in result.output and "5 refused" in result.output
        assert "has no value" in result.output and "belong to patient P001, not P002" in \
            result.output


async def test_import_reads_times_in_the_facility_zone_and_its_lis_name(make_settings,
                                                                         tmp_path):
    """The registry says township-1's LIS runs on Xinjiang time and calls itself TWP1-LIS:
    its message is taken under that name and its local times carry +06:00."""
    consortium = read_consortium(None)
    f = consortium.get("township-1")
    consortium.put(Facility(dataclasses.replace(f.record, timezone="Asia/Urumqi",
                                                hl7_names=("TWP1-LIS",)), f.token))
    path = tmp_path / "consortium.yaml"
    write_consortium(consortium, path)
    settings = make_settings(facilities_file=path)
    batch = tmp_path / "lis.hl7"
    batch.write_text(oru(facility="TWP1-LIS") + oru(control="ORU9", facility="LAB-X"))
    env = {"HUB_KAFKA_BOOTSTRAP": settings.bootstrap, "HUB_DATABASE_URL": settings.db_url,
           "HUB_FACILITIES_FILE": str(path), "HUB_TOPIC_INBOUND": settings.topics.inbound,
           "HUB_TOPIC_DEADLETTER": settings.topics.deadletter, "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "hl7-import", str(batch), "--facility", "township-1"], env=env)
    assert result.exit_code == 2, result.output
    assert "1 messages accepted" in result.output
    assert "MSH-4 sending facility 'LAB-X' is not 'township-1' or 'TWP1-LIS'" in result.output
    events = await read_json_topic(settings, settings.topics.inbound, 7)
    glucose = next(e for e in events if e["resourceType"] == "Observation"
                   and e["code"]["coding"][0]["code"] == "15074-8")
    assert glucose["effectiveDateTime"] == "2026-11-01T08:00:00+06:00"
