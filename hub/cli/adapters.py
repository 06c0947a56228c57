"""``hub mllp``, ``hub hl7-import``, ``hub dicom-scan``: facility systems into the hub;
``hub devices``: home meters into the hub.

The first three run as the facility: they sign with the facility's key and publish to
``hie.inbound.v1``, where the hub verifies and validates like any other event. ``hub
devices`` runs the MQTT device gateway on the hub's side (its store, key and registry), as
``hub serve --mqtt`` does in the serving process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from hub import clock
from hub.cli.common import (
    DataOpt,
    DbOpt,
    FacilitiesOpt,
    console,
    fail,
    hub_command,
    progress,
    quiet_kafka,
    run,
    settings,
    until_cancelled,
)
from hub.config import Settings
from hub.errors import ConfigError
from hub.registry.consortium_file import read_consortium
from hub.signing import Signer, demo_signer, read_private_key

if TYPE_CHECKING:
    from adapters.hl7v2.intake import Hl7Intake
    from hub.engine.receipts import ReceiptWaiter
    from hub.log.producer import Publisher

Hl7FacilityOpt = Annotated[str, typer.Option(
    "--facility", help="The facility these messages come from (the sending facility, MSH-4, "
    "must name it or one of its registry hl7_names, if filled).")]
DicomFacilityOpt = Annotated[str, typer.Option(
    "--facility", help="The facility whose PACS the folder comes from: the studies are "
    "published in its name and signed with its key.")]
KeyOpt = Annotated[Path | None, typer.Option(
    "--key-file", help="The facility's Ed25519 private key (PEM). Omit for a demo facility.")]
KidOpt = Annotated[str | None, typer.Option(
    "--kid", help="Its key id, e.g. township-1#2. Default: the facility's current key.")]
KafkaOpt = Annotated[str | None, typer.Option("--kafka", envvar="HUB_KAFKA_BOOTSTRAP",
                                              help="HOST:PORT of the hub's Kafka.")]


def facility_signer(s: Settings, facility: str, key_file: Path | None,
                    kid: str | None) -> Signer:
    """The facility's signer, checked against the registry before anything is sent: a
    wrong key would only be refused later, one dead letter per message."""
    record = read_consortium(s.facilities_file).get(facility).record
    current = record.current_key()
    kid = kid or (current.kid if current else None)
    if kid is None:
        raise ConfigError(f"{facility} has no signing key: `{hub_command()} facility "
                          f"rotate-key {facility}` gives it one")
    known = {k.kid: k for k in record.keys}
    if kid not in known:
        raise ConfigError(f"--kid {kid!r} is not a key of {facility}; its keys: "
                          f"{', '.join(known) or 'none'}")
    status = known[kid].status_at(clock.now())
    if status != "active":
        raise ConfigError(f"{kid} is {status}: sign with {facility}'s current key")
    if key_file is not None:
        signer = Signer(kid, read_private_key(key_file))
        if signer.public_key != known[kid].public_key:
            raise ConfigError(f"{key_file} is not the private key of {kid}")
        return signer
    n = kid.rsplit("#", 1)[-1]
    demo = demo_signer(facility, int(n)) if n.isdigit() else None
    if demo is None or demo.public_key != known[kid].public_key:
        raise ConfigError(f"--key-file is needed: {kid} is not a demo key")
    return demo


def hl7_intake(s: Settings, facility: str, signer: Signer, publisher: Publisher,
               receipts: ReceiptWaiter | None = None) -> Hl7Intake:
    """The facility's intake with what the registry says about its HL7 systems (their time
    zone, their MSH-4 names), claiming results in the hub's store."""
    from adapters.hl7v2.intake import Hl7Intake
    from hub.store.db import open_store

    record = read_consortium(s.facilities_file).get(facility).record
    return Hl7Intake(s, facility, signer, publisher, open_store(s.db_url), receipts,
                     record.zone(), record.hl7_names)


def mllp(facility: Hl7FacilityOpt,
         port: Annotated[int, typer.Option(help="Port the LIS connects to.",
                                           min=0, max=65535)] = 2575,
         host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
         key_file: KeyOpt = None, kid: KidOpt = None, kafka: KafkaOpt = None,
         facilities: FacilitiesOpt = None) -> None:
    """Listen for HL7 v2 over MLLP (ORU^R01, ADT^A01/A04/A08) for one facility; answer each
    message with an ACK (AA), or AE/AR with the reason."""
    from adapters.hl7v2.mllp import MllpServer
    from hub.engine.receipts import ReceiptWaiter
    from hub.log.producer import Publisher
    from hub.log.topics import durable_ack

    s = settings(kafka, facilities=facilities)
    signer = facility_signer(s, facility, key_file, kid)

    async def main() -> None:
        with quiet_kafka():
            publisher = await Publisher(s).start()
        receipts = None
        if await asyncio.to_thread(durable_ack, s):
            receipts = ReceiptWaiter(s, facility)
            await receipts.start()
        server = MllpServer(hl7_intake(s, facility, signer, publisher, receipts), host, port)
        meaning = ("the hub's journal committed it" if receipts else
                   "the broker acknowledged it")
        try:
            await server.start()
            console.print(f"MLLP listener for {facility} on {host}:{server.port} -> "
                          f"{s.topics.inbound} at {s.bootstrap} (signing as "
                          f"{signer.kid}; AA once {meaning}). Ctrl-C stops.")
            await asyncio.Event().wait()
        finally:
            # Ctrl-C/SIGTERM: messages already taken are answered before the listener goes.
            await server.stop(s.stop_timeout_s)
            if receipts is not None:
                await receipts.stop()
            await publisher.stop()

    run(main())


def hl7_import(files: Annotated[list[Path], typer.Argument(help="HL7 v2 files (MLLP-framed "
                                                          "or one message after another).")],
               facility: Hl7FacilityOpt, key_file: KeyOpt = None, kid: KidOpt = None,
               kafka: KafkaOpt = None, facilities: FacilitiesOpt = None) -> None:
    """Import HL7 v2 messages from files, with a progress bar; refused ones are listed and
    dead-lettered, the others published."""
    from adapters.hl7v2.codec import split_file
    from hub.log.producer import Publisher

    s = settings(kafka, facilities=facilities)
    signer = facility_signer(s, facility, key_file, kid)
    messages = [(f, m) for f in files for m in split_file(f.read_bytes())]
    if not messages:
        fail(f"no HL7 v2 messages in {', '.join(map(str, files))}")
    refused: list[str] = []

    async def main() -> None:
        publisher = await Publisher(s).start()
        intake = hl7_intake(s, facility, signer, publisher)
        try:
            with progress() as bar:
                task = bar.add_task("importing HL7 v2", total=len(messages))
                for i, (f, raw) in enumerate(messages, 1):
                    _, code, reason = await intake.handle(raw)
                    if code != "AA":
                        refused.append(f"{f.name} message {i}: {code} {reason}")
                    bar.advance(task)
        finally:
            await publisher.stop()
        st = intake.stats
        console.print(f"[green]{st.accepted} messages accepted ({st.events} events)[/green], "
                      f"{st.refused} refused (dead-lettered)")
        for line in refused[:20]:
            console.print(f"  {line}")

    with quiet_kafka():
        run(main())
    if refused:
        raise typer.Exit(2)


def dicom_scan(folder: Annotated[Path, typer.Argument(help="A PACS drop folder (searched "
                                                     "recursively).")],
               facility: DicomFacilityOpt, key_file: KeyOpt = None, kid: KidOpt = None,
               endpoint: Annotated[str | None, typer.Option(
                   help="DICOMweb base URL where the images can be fetched.")] = None,
               kafka: KafkaOpt = None, facilities: FacilitiesOpt = None) -> None:
    """Read DICOM headers from a folder, group instances into series and studies, and
    publish one ImagingStudy per study (sending a study again updates it)."""
    from adapters.dicom.scan import imaging_study, scan_folder
    from adapters.sdk import build_envelope
    from hub.fhir import validate
    from hub.log.producer import Publisher

    s = settings(kafka, facilities=facilities)
    signer = facility_signer(s, facility, key_file, kid)
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            fail(f"--endpoint {endpoint!r} is not an http(s) URL")
    studies: list[dict] = []
    problems: list[tuple[str, str]] = []

    async def main() -> None:
        # Kafka first: a silent broker is worth knowing before a long scan, not after it.
        with quiet_kafka():
            publisher = await Publisher(s).start()
        try:
            total = sum(1 for p in folder.rglob("*") if p.is_file())
            with progress() as bar:
                task = bar.add_task("reading DICOM headers", total=total)
                scan = await asyncio.to_thread(scan_folder, folder,
                                               lambda k: bar.advance(task, k))
            problems.extend((str(p), reason) for p, reason in scan.problems)
            for st in scan.studies.values():
                res = imaging_study(st, endpoint)
                issues = validate(res, "ImagingStudy")
                if issues:
                    problems.append((res["id"], "; ".join(i.diagnostics for i in issues)))
                else:
                    studies.append(res)
            if studies:
                with quiet_kafka():
                    await publisher.publish(s.topics.inbound,
                                            [build_envelope(signer, r) for r in studies])
        finally:
            await publisher.stop()

    run(main())
    console.print(f"[green]{len(studies)} studies published[/green] ("
                  f"{sum(r['numberOfInstances'] for r in studies)} instances) to "
                  f"{s.topics.inbound}; {len(problems)} files skipped")
    for where, reason in problems[:30]:
        console.print(f"  {where}: {reason}")
    if problems:
        raise typer.Exit(2)


def devices(mqtt: Annotated[str, typer.Option(
                "--mqtt", envvar="HUB_MONITORING_MQTT_URL",
                help="mqtt://HOST:PORT of the broker the home meters publish to.")],
            kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
            facilities: FacilitiesOpt = None) -> None:
    """Run only the MQTT device gateway: readings from home meters, acknowledged once the
    hub has them durably (beside a `hub serve` / `hub project` on the same store)."""
    from hub.cli.run import mqtt_url
    from hub.service import Hub

    s = settings(kafka, db, data_dir, facilities)
    url = mqtt_url(mqtt)
    assert url

    async def main() -> None:
        async with Hub(s, start_broker=False) as hub:
            hub.start_registry_watch()  # devices added or re-bound take effect live
            await hub.start_mqtt(url)
            console.print(f"device gateway: {url} {s.monitoring.mqtt_topic} -> "
                          f"{s.topics.events} at {s.bootstrap}. Ctrl-C stops.")
            await until_cancelled()

    run(main())


def register(app: typer.Typer) -> None:
    app.command("mllp")(mllp)
    app.command("hl7-import")(hl7_import)
    app.command("dicom-scan")(dicom_scan)
    app.command("devices")(devices)
