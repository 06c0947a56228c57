"""``hub-publish``: for facility systems that can only export files.

    hub-publish results.ndjson lab.csv --mapping lab-mapping.yaml --facility village-3 \\
        --key-file keys/village-3-1.pem --kafka hub.example:9092 --errors refused.csv

FHIR JSON (a resource or a Bundle), ndjson, and lab-result CSVs (columns mapped by a small
YAML, ``adapters.filepublish.mapping``) are checked row by row, signed with the facility's
key and published through the SDK's outbox, so an export made while the link is down is
kept and sent later (the next run, or any flush on the same outbox, sends it).

Exit codes: 0 every row was queued (sent, or kept in the outbox until the link is back);
1 some rows were refused (the report says which row, which column and why; the others were
queued); 2 the operator's mistake (a missing file, a bad mapping, an unreadable key, an
outbox that is full or in use): one sentence, nothing queued.
"""

from __future__ import annotations

import csv
import enum
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from adapters.filepublish.fhirfiles import NDJSON, read_fhir
from adapters.filepublish.mapping import (
    Mapped,
    MappingError,
    RowError,
    load_mapping,
    read_csv,
)
from adapters.sdk.outbox import OutboxError
from adapters.sdk.publisher import INBOUND_TOPIC, FacilityPublisher
from hub import clock
from hub.errors import HubError
from hub.signing import Signer, demo_signer, key_owner, read_private_key

GROUP = 200  # resources per outbox transaction: one fsync per group, not per row
SHOWN = 50   # report lines printed; the --errors CSV has them all

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Publish FHIR JSON/ndjson files and lab-result CSVs to the hub.")


class Confirm(enum.StrEnum):
    journal = "journal"
    broker = "broker"


class OperatorError(Exception):
    """A mistake in how the command was called: exit code 2, one sentence."""


def publish_files(
    files: Annotated[list[Path], typer.Argument(
        help="FHIR .json (a resource or a Bundle), .ndjson/.jsonl, or .csv lab results.",
        show_default=False)],
    facility: Annotated[str, typer.Option(help="The facility publishing (its id in the "
                                               "consortium).", show_default=False)],
    mapping: Annotated[Path | None, typer.Option(
        help="YAML naming the CSV's columns (needed for .csv files).")] = None,
    key_file: Annotated[Path | None, typer.Option(
        help="The facility's Ed25519 private key (PEM). Omit only for a demo facility.")
    ] = None,
    kid: Annotated[str | None, typer.Option(
        help="The key's id in the registry, e.g. village-3#2. Default: <facility>#1.")] = None,
    kafka: Annotated[str, typer.Option(envvar="HUB_KAFKA_BOOTSTRAP",
                                       help="HOST:PORT of the hub's Kafka.")] = "127.0.0.1:19092",
    topic: Annotated[str, typer.Option(envvar="HUB_TOPIC_INBOUND")] = INBOUND_TOPIC,
    outbox: Annotated[Path, typer.Option(
        envvar="HUB_OUTBOX", help="The SDK outbox (SQLite) that keeps what could not be sent "
                                  "yet; use the same file on every run.")] = Path("hub-outbox.db"),
    errors: Annotated[Path | None, typer.Option(
        help="Also write the refused rows to this CSV (file, row, column, value, reason).")
    ] = None,
    flush_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the broker and the hub's receipts; what is not confirmed "
             "by then stays in the outbox.")] = 30.0,
    confirm: Annotated[Confirm, typer.Option(
        help="journal: an event leaves the outbox when the hub's receipt says its SQL "
             "journal has it (or refused it); broker: when the broker acknowledged it "
             "(enough with a replicated Apache Kafka).")] = Confirm.journal,
) -> None:
    """Check, sign and publish exported files; report every refused row."""
    # The summary says whether the broker answered; kafka-python's and the outbox's
    # connection warnings would only repeat it, once per retry.
    for name in ("kafka", "adapters.sdk"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        code = _run(files, facility, mapping, key_file, kid, kafka, topic, outbox, errors,
                    flush_timeout, confirm.value)
    except OperatorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


app.command()(publish_files)


def _run(files: list[Path], facility: str, mapping_file: Path | None, key_file: Path | None,
         kid: str | None, kafka: str, topic: str, outbox: Path, errors_csv: Path | None,
         flush_timeout: float, confirm: str = "journal") -> int:
    # Everything the operator gave is checked before the first event is queued, so a
    # mistake never leaves half a run behind.
    for f in files:
        if not f.is_file():
            raise OperatorError(f"{f} does not exist or is not a file")
        if f.suffix.lower() not in (".json", ".csv", *NDJSON):
            raise OperatorError(f"{f}: hub-publish reads .json, .ndjson, .jsonl and .csv "
                                "files")
    csvs = [f for f in files if f.suffix.lower() == ".csv"]
    if csvs and mapping_file is None:
        raise OperatorError("CSV files need --mapping (a YAML naming the columns; see "
                            "samples/csv/lab-mapping.yaml)")
    try:
        mapping = load_mapping(mapping_file) if csvs and mapping_file else None
    except MappingError as exc:
        raise OperatorError(str(exc)) from None
    signer = _signer(facility, key_file, kid)
    now = clock.now_rfc3339()
    try:
        # Read (and check) every file before publishing: a bad header or encoding is the
        # operator's mistake and must not leave the first files published.
        items = [item for f in files for item in (
            read_csv(f, mapping, facility, now) if f in csvs and mapping else read_fhir(f))]
    except MappingError as exc:
        raise OperatorError(str(exc)) from None
    refused = [i for i in items if isinstance(i, RowError)]
    rows = [i for i in items if isinstance(i, Mapped)]
    try:
        pub = FacilityPublisher(kafka, signer, topic=topic, outbox=outbox, confirm=confirm)
    except OutboxError as exc:
        raise OperatorError(str(exc)) from None
    queued = 0
    try:
        for group in _groups(rows):
            pub.publish_many([r for m in group for r in m.resources])
            queued += len(group)
        result = pub.flush(flush_timeout)
    except OutboxError as exc:
        raise OperatorError(f"{exc} ({queued} rows were queued before)") from None
    finally:
        pub.close()
    resources = sum(len(m.resources) for m in rows)
    typer.echo(f"{queued} rows queued ({resources} resources) as {signer.kid} to {topic}; "
               f"{len(refused)} refused. {result.message}")
    _report(refused, errors_csv)
    return 1 if refused else 0


def _signer(facility: str, key_file: Path | None, kid: str | None) -> Signer:
    kid = kid or f"{facility}#1"
    if key_owner(kid) != facility or not kid.rsplit("#", 1)[-1].isdigit():
        raise OperatorError(f"--kid {kid} is not one of {facility}'s key ids "
                            f"({facility}#<n>)")
    if key_file is None:
        typer.echo(f"note: no --key-file, signing with the demo key of {facility} (demo "
                   "consortium only)", err=True)
        return demo_signer(facility, int(kid.rsplit("#", 1)[1]))
    try:
        return Signer(kid, read_private_key(key_file))
    except HubError as exc:
        raise OperatorError(str(exc)) from None


def _groups(rows: list[Mapped]) -> Iterator[list[Mapped]]:
    group: list[Mapped] = []
    size = 0
    for m in rows:
        group.append(m)
        size += len(m.resources)
        if size >= GROUP:
            yield group
            group, size = [], 0
    if group:
        yield group


def _report(refused: list[RowError], errors_csv: Path | None) -> None:
    for e in refused[:SHOWN]:
        where = f"{e.file} row {e.row}" + (f", column {e.column}" if e.column else "")
        value = f" ({e.value!r})" if e.value else ""
        typer.echo(f"  {where}{value}: {e.reason}")
    if len(refused) > SHOWN:
        typer.echo(f"  ... and {len(refused) - SHOWN} more" +
                   (f" (all in {errors_csv})" if errors_csv else " (--errors FILE lists all)"))
    if errors_csv is not None:
        # utf-8-sig: opens correctly in the spreadsheets clinics use (Chinese column names).
        with errors_csv.open("w", encoding="utf-8-sig", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["file", "row", "column", "value", "reason"])
            out.writerows([e.file, e.row, e.column, e.value, e.reason] for e in refused)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``hub-publish`` script."""
    return app(args=argv)


if __name__ == "__main__":
    main()
