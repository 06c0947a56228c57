"""``hub mllp``, ``hub hl7-import``, ``hub dicom-scan``: facility systems into the hub.

Each runs as the facility: it signs with the facility's key and publishes to
``hie.inbound.v1``, where the hub verifies and validates like any other event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from hub.config import Settings, load_settings
from hub.errors import ConfigError, HubError
from hub.signing import Signer, demo_signer, read_private_key

console = Console()
FacilityArg = Annotated[str, typer.Option("--facility", help="The facility these messages "
                                          "come from (its MSH-4 must match, if filled).")]
KeyOpt = Annotated[Path | None, typer.Option(
    "--key-file", help="The facility's Ed25519 private key (PEM). Omit for a demo facility.")]
KidOpt = Annotated[str | None, typer.Option(
    "--kid", help="Its key id, e.g. township-1#2. Default: the facility's current key.")]
KafkaOpt = Annotated[str | None, typer.Option("--kafka", envvar="HUB_KAFKA_BOOTSTRAP",
                                              help="HOST:PORT of the hub's Kafka.")]
FacilitiesOpt = Annotated[Path | None, typer.Option("--facilities",
                                                    envvar="HUB_FACILITIES_FILE")]


def facility_signer(settings: Settings, facility: str, key_file: Path | None,
                    kid: str | None) -> Signer:
    from hub.registry.consortium_file import read_consortium

    record = read_consortium(settings.facilities_file).get(facility).record
    current = record.current_key()
    kid = kid or (current.kid if current else None)
    if kid is None:
        raise ConfigError(f"{facility} has no signing key: `hub facility rotate-key "
                          f"{facility}` gives it one")
    if key_file is not None:
        return Signer(kid, read_private_key(key_file))
    demo = demo_signer(facility, int(kid.rsplit("#", 1)[1]))
    if current is None or current.public_key != demo.public_key:
        raise ConfigError(f"--key-file is needed: {kid} is not a demo key")
    return demo


def mllp(facility: FacilityArg,
         port: Annotated[int, typer.Option(help="Port the LIS connects to.")] = 2575,
         host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
         key_file: KeyOpt = None, kid: KidOpt = None, kafka: KafkaOpt = None,
         facilities: FacilitiesOpt = None) -> None:
    """Listen for HL7 v2 over MLLP (ORU^R01, ADT^A01/A04/A08) for one facility; answer each
    message with an ACK (AA), or AE/AR with the reason."""
    import asyncio

    from adapters.hl7v2.intake import Hl7Intake
    from adapters.hl7v2.mllp import MllpServer
    from hub.cli import _run
    from hub.log.producer import Publisher

    settings = load_settings(kafka_bootstrap=kafka, facilities_file=facilities)
    try:
        signer = facility_signer(settings, facility, key_file, kid)
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc

    async def main() -> None:
        publisher = await Publisher(settings).start()
        server = MllpServer(Hl7Intake(settings, facility, signer, publisher), host, port)
        try:
            await server.start()
            console.print(f"MLLP listener for {facility} on {host}:{server.port} -> "
                          f"{settings.topics.inbound} at {settings.bootstrap} (signing as "
                          f"{signer.kid}). Ctrl-C stops.")
            await asyncio.Event().wait()
        finally:
            await server.stop()
            await publisher.stop()

    _run(main())


def hl7_import(files: Annotated[list[Path], typer.Argument(help="HL7 v2 files (MLLP-framed "
                                                          "or one message after another).")],
               facility: FacilityArg, key_file: KeyOpt = None, kid: KidOpt = None,
               kafka: KafkaOpt = None, facilities: FacilitiesOpt = None) -> None:
    """Import HL7 v2 messages from files, with a progress bar; refused ones are listed and
    dead-lettered, the others published."""
    from adapters.hl7v2.codec import split_file
    from adapters.hl7v2.intake import Hl7Intake
    from hub.cli import _run
    from hub.log.producer import Publisher

    settings = load_settings(kafka_bootstrap=kafka, facilities_file=facilities)
    try:
        signer = facility_signer(settings, facility, key_file, kid)
        messages = [(f, m) for f in files for m in split_file(f.read_bytes())]
    except (HubError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    refused: list[str] = []

    async def main() -> None:
        publisher = await Publisher(settings).start()
        intake = Hl7Intake(settings, facility, signer, publisher)
        try:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("importing HL7 v2", total=len(messages))
                for i, (f, raw) in enumerate(messages, 1):
                    _, code, reason = await intake.handle(raw)
                    if code != "AA":
                        refused.append(f"{f.name} message {i}: {code} {reason}")
                    bar.advance(task)
        finally:
            await publisher.stop()
        s = intake.stats
        console.print(f"[green]{s.accepted} messages accepted ({s.events} events)[/green], "
                      f"{s.refused} refused (dead-lettered)")
        for line in refused[:20]:
            console.print(f"  {line}")

    _run(main())
    if refused:
        raise typer.Exit(2)


def dicom_scan(folder: Annotated[Path, typer.Argument(help="A PACS drop folder (searched "
                                                     "recursively).")],
               facility: FacilityArg, key_file: KeyOpt = None, kid: KidOpt = None,
               endpoint: Annotated[str | None, typer.Option(
                   help="DICOMweb base URL where the images can be fetched.")] = None,
               kafka: KafkaOpt = None, facilities: FacilitiesOpt = None) -> None:
    """Read DICOM headers from a folder, group instances into series and studies, and
    publish one ImagingStudy per study (sending a study again updates it)."""
    from adapters.dicom.scan import imaging_study, scan_folder
    from adapters.sdk import build_envelope
    from hub.cli import _run
    from hub.fhir import validate
    from hub.log.producer import Publisher

    settings = load_settings(kafka_bootstrap=kafka, facilities_file=facilities)
    try:
        signer = facility_signer(settings, facility, key_file, kid)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder")
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    total = sum(1 for p in folder.rglob("*") if p.is_file())
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("reading DICOM headers", total=total)
        scan = scan_folder(folder, lambda k: bar.advance(task, k))
    studies = [imaging_study(s, endpoint) for s in scan.studies.values()]
    problems = [(str(p), reason) for p, reason in scan.problems]
    for res in list(studies):
        issues = validate(res, "ImagingStudy")
        if issues:
            problems.append((res["id"], "; ".join(i.diagnostics for i in issues)))
            studies.remove(res)

    async def main() -> None:
        publisher = await Publisher(settings).start()
        try:
            await publisher.publish(settings.topics.inbound,
                                    [build_envelope(signer, r) for r in studies])
        finally:
            await publisher.stop()

    if studies:
        _run(main())
    console.print(f"[green]{len(studies)} studies published[/green] ("
                  f"{sum(r['numberOfInstances'] for r in studies)} instances) to "
                  f"{settings.topics.inbound}; {len(problems)} files skipped")
    for where, reason in problems[:30]:
        console.print(f"  {where}: {reason}")
    if problems:
        raise typer.Exit(2)
