"""The README's "Try the adapters" on a running hub: the public samples in ``samples/`` sent
over MLLP with python-hl7's ``mllp_send`` to the listener ``hub mllp`` runs, the DICOM
samples through ``hub dicom-scan``, and the results read back through the API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hub.cli import app
from tests.support.hub_server import auth, eventually, mllp_listener, running_hub

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# The README's line: MSH-4 set to the facility the listener speaks for.
RETARGET = r"1s/^(MSH\|[^|]*\|[^|]*\|)[^|]*/\1township-1/"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"  # installed with python-hl7


def send_samples(port: int, out: Path) -> dict[str, str]:
    """What the README does, file by file: rewrite MSH-4, send, read the ACK's MSA."""
    codes = {}
    for f in sorted((SAMPLES / "hl7v2").glob("*.hl7")):
        target = out / f.name
        target.write_bytes(subprocess.run(["sed", "-E", RETARGET, str(f)], check=True,
                                          capture_output=True).stdout)
        ack = subprocess.run([str(MLLP_SEND), "--loose", "--file", str(target), "--port",
                              str(port), "127.0.0.1"], check=True, capture_output=True,
                             text=True, timeout=60).stdout
        msa = next(s for s in ack.replace("\n", "\r").split("\r") if s.startswith("MSA|"))
        codes[f.name] = msa.split("|")[1]
    return codes


async def test_samples_over_mllp_and_dicom_scan_reach_the_read_api(make_settings, tmp_path):
    settings = make_settings()
    async with running_hub(settings) as (hub, base):
        async with mllp_listener(settings, hub) as server:
            codes = await asyncio.to_thread(send_samples, server.port, tmp_path)
        assert codes == {f.name: "AA" for f in (SAMPLES / "hl7v2").glob("*.hl7")}

        env = {"HUB_KAFKA_BOOTSTRAP": settings.bootstrap, "COLUMNS": "200",
               "HUB_TOPIC_INBOUND": settings.topics.inbound}
        scanned = await asyncio.to_thread(CliRunner().invoke, app, [
            "dicom-scan", str(SAMPLES / "dicom"), "--facility", "township-1"], env=env)
        assert scanned.exit_code == 0, scanned.output
        assert "3 studies published (6 instances)" in scanned.output

        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-city-1"),
                                     timeout=30) as c:
            async def results(patient: str, rtype: str = "Observation") -> list[dict]:
                r = await c.get(f"/fhir/{rtype}", params={"patient": f"township-1.{patient}"})
                return [e["resource"] for e in r.json().get("entry", [])]

            async def lead_corrected() -> bool:
                found = await results("9817566735")
                return [(o["status"], o["valueQuantity"]["value"]) for o in found] == [
                    ("corrected", 25.0)]

            async def three_cultures() -> bool:
                return len(await results("987488015")) == 3

            async def newborn_screening() -> bool:  # 13 panels sharing one filler number
                return (len(await results("123456")) == 33 and
                        len(await results("123456", "DiagnosticReport")) == 13)

            async def performers_resolve() -> bool:  # the facility, then the lab (OBX-23)
                found = await results("9817566735")
                refs = [p["reference"] for p in found[0]["performer"]] if found else []
                orgs = [await c.get(f"/fhir/{ref}") for ref in refs]
                return [r.status_code for r in orgs] == [200, 200] and [
                    r.json()["id"] for r in orgs] == ["township-1.township-1", refs[1][13:]] \
                    and orgs[1].json()["name"] == "Lab"

            async def patient_from_a_result() -> bool:  # no ADT for him: the ORU's PID
                r = await c.get("/fhir/Patient/township-1.987488015")
                return r.status_code == 200 and r.json()["name"][0]["text"] == "Adam Whiteagle"

            async def newborn_admitted() -> bool:
                r = await c.get("/fhir/Patient/township-1.11102779")
                return r.status_code == 200

            async def brain_study() -> bool:
                found = await results("98890234", "ImagingStudy")
                return [s["numberOfInstances"] for s in found] == [4]

            for check in (lead_corrected, three_cultures, newborn_screening,
                          performers_resolve, patient_from_a_result, newborn_admitted,
                          brain_study):
                await eventually(check)
        async with httpx.AsyncClient(base_url=base, headers=auth("demo-secret-county-1"),
                                     timeout=30) as county:
            async def on_worklist() -> bool:  # township-1's imaging is read at county-1
                return (await county.get("/imaging/worklist")).json()["count"] == 3

            await eventually(on_worklist)
