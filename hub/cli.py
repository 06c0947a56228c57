"""The ``hub`` command. Thin: parses options, builds settings, calls into the hub."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from hub import cli_adapters, cli_deadletters
from hub.cli_facility import facility_app
from hub.cli_mpi import mpi_app
from hub.cli_recognition import recognition_app
from hub.config import Settings, load_settings
from hub.errors import HubError

app = typer.Typer(help="Health-information exchange hub for a regional medical consortium.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
app.add_typer(facility_app, name="facility")
app.add_typer(mpi_app, name="mpi")
app.add_typer(recognition_app, name="recognition")

KafkaOpt = Annotated[str | None, typer.Option(
    "--kafka", envvar="HUB_KAFKA_BOOTSTRAP",
    help="HOST:PORT of an existing Kafka. Omit to use the bundled broker.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", envvar="HUB_DATABASE_URL",
    help="SQLAlchemy URL (sqlite:///path or postgresql://...). Default: SQLite in --data-dir.")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", envvar="HUB_DATA_DIR",
                                              help="Where the SQLite file and logs live.")]
FacilitiesOpt = Annotated[Path | None, typer.Option(
    "--facilities", envvar="HUB_FACILITIES_FILE",
    help="Consortium YAML. Default: the bundled demo consortium.")]


def _settings(kafka: str | None, db: str | None, data_dir: Path | None,
              facilities: Path | None, **more: object) -> Settings:
    return load_settings(kafka_bootstrap=kafka, database_url=db, data_dir=data_dir,
                         facilities_file=facilities, **more)


def run_loop(coro):
    """asyncio.run on uvloop where installed (a faster loop for Kafka and HTTP I/O)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _run(coro) -> None:
    """Run ``coro``; Ctrl-C or SIGTERM cancels it so it drains; HubError exits 1 clearly."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():  # else: embedded use
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            console.print("[yellow]stopped[/yellow]")

    try:
        run_loop(main())
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


async def _until_cancelled() -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 19092,
    data_dir: DataOpt = None,
) -> None:
    """Run the bundled Kafka-compatible broker (memory only) with the hub's topics."""
    from hub.log.broker import EmbeddedBroker
    from hub.log.topics import ensure_topics

    settings = load_settings(embedded_broker_port=port, data_dir=data_dir)

    async def main() -> None:
        with EmbeddedBroker(port) as b:
            await asyncio.to_thread(ensure_topics, settings)
            console.print(f"bundled broker ready on [bold]{b.bootstrap}[/bold] with topics "
                          f"{settings.topics.inbound}, {settings.topics.events} "
                          f"({settings.events_partitions} partitions), "
                          f"{settings.topics.deadletter}. It keeps nothing on disk. Ctrl-C stops.")
            await _until_cancelled()

    _run(main())


@app.command()
def serve(
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    facilities: FacilitiesOpt = None,
    host: Annotated[str, typer.Option(envvar="HUB_API_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="HUB_API_PORT")] = 8080,
    ingest: Annotated[bool, typer.Option(help="Run the inbound ingest stage.")] = True,
    projections: Annotated[bool, typer.Option(help="Run the journal and projections.")] = True,
) -> None:
    """Run the FHIR gateway and read API (plus ingest and projections unless turned off)."""
    from hub.service import Hub

    settings = _settings(kafka, db, data_dir, facilities, api_host=host, api_port=port)

    async def main() -> None:
        async with Hub(settings) as hub:
            hub.start_api()
            hub.start_registry_watch()
            if ingest:
                hub.start_ingest()
            if projections:
                hub.start_projections()
            await hub.api_ready()
            console.print(f"hub serving on http://{host}:{port}/fhir (Kafka "
                          f"{settings.bootstrap}, store {settings.db_url}). Ctrl-C stops.")
            await _until_cancelled()

    _run(main())


@app.command()
def ingest(kafka: KafkaOpt = None, data_dir: DataOpt = None,
           facilities: FacilitiesOpt = None) -> None:
    """Run only the ingest stage: hie.inbound.v1 -> validate -> hie.events.v1."""
    from hub.service import Hub

    settings = _settings(kafka, None, data_dir, facilities)

    async def main() -> None:
        async with Hub(settings, start_broker=False) as hub:
            task = hub.start_ingest()
            await task

    _run(main())


@app.command()
def project(
    names: Annotated[list[str] | None, typer.Argument(help="Projections (default: all).")] = None,
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    until_caught_up: Annotated[bool, typer.Option(
        help="Exit once every event in the log is applied.")] = False,
) -> None:
    """Run only the journal and projection runners."""
    from hub.projections import all_projections
    from hub.service import Hub

    known = all_projections()
    for n in names or []:
        if n not in known:
            raise typer.BadParameter(f"unknown projection {n!r}; known: {', '.join(known)}")
    settings = _settings(kafka, db, data_dir, None)

    async def main() -> None:
        async with Hub(settings, start_broker=False) as hub:
            tasks = hub.start_projections(names, until_caught_up=until_caught_up)
            results = await asyncio.gather(*tasks)
            for runner, stats in zip(hub.runners, results, strict=True):
                console.print(f"{runner.projection.name}: applied {stats.applied}, skipped "
                              f"{stats.skipped}, dead-lettered {stats.deadlettered}")

    _run(main())


@app.command()
def rebuild(
    name: Annotated[str, typer.Argument(help="Projection to rebuild from the journal.")],
    db: DbOpt = None, data_dir: DataOpt = None,
) -> None:
    """Rebuild a projection from the journal into shadow tables and swap them in atomically."""
    from hub.engine.rebuild import journal_size
    from hub.engine.rebuild import rebuild as do_rebuild
    from hub.projections import rebuildable
    from hub.store.db import open_store

    catalogue = rebuildable()
    if name not in catalogue:
        raise typer.BadParameter(f"unknown projection {name!r}; rebuildable: "
                                 f"{', '.join(catalogue)}")
    settings = _settings(None, db, data_dir, None)
    try:
        from hub.identity import load_or_create_secret, use_identity_secret

        use_identity_secret(load_or_create_secret(settings.identity_secret_path))
        store = open_store(settings.db_url)
        total = journal_size(store)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(f"rebuilding {name}", total=total)
            n = do_rebuild(store, catalogue[name], lambda k: bar.advance(task, k))
        console.print(f"[green]rebuilt {name} from {n} journal events and swapped it in[/green]")
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def verify(db: DbOpt = None, data_dir: DataOpt = None) -> None:
    """Check every journaled event's signature against the registry's keys as of its time
    (rotated keys stay verifiable); exits 1 if any fails."""
    from hub.engine.rebuild import journal_size
    from hub.registry.audit import verify_journal
    from hub.store.db import open_store

    settings = _settings(None, db, data_dir, None)
    try:
        store = open_store(settings.db_url)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("verifying the journal", total=journal_size(store))
            n, failures, examples = verify_journal(store, lambda k: bar.advance(task, k))
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if failures:
        console.print(f"[red]{sum(failures.values())} of {n} events do not verify:[/red] "
                      + ", ".join(f"{k} {v}" for k, v in failures.most_common()))
        for line in examples:
            console.print(f"  {line}")
        raise typer.Exit(1)
    console.print(f"[green]all {n} journaled events verify against the registry[/green]")


@app.command()
def topics(kafka: KafkaOpt = None) -> None:
    """Create the hub's topics on the given Kafka (idempotent)."""
    from hub.log.topics import ensure_topics

    settings = _settings(kafka, None, None, None)
    try:
        ensure_topics(settings)
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"topics ready on {settings.bootstrap}")


# What was refused and why, from the store (hub/cli_deadletters.py).
app.command("deadletters")(cli_deadletters.deadletters)


@app.command()
def demo(
    seconds: Annotated[float | None, typer.Option(help="Stop after N seconds.")] = None,
    rate: Annotated[float, typer.Option(help="Events per second the simulator publishes.")] = 50,
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    port: Annotated[int, typer.Option(help="API port.")] = 8080,
) -> None:
    """Broker + gateway + ingest + journal + projections + API, and a simulated consortium."""
    from hub.demo.run import run_demo
    from hub.log.broker import free_port, port_in_use

    settings = _settings(kafka, db, data_dir, None, api_port=port)
    # A demo should just run: if something already listens on a default port, take a free
    # one and say so (the panel printed at start shows the ports in use).
    moved = {}
    if port_in_use(settings.api_port):
        moved["api_port"] = free_port()
    if settings.embedded and port_in_use(settings.embedded_broker_port):
        moved["embedded_broker_port"] = free_port()
    for name, new in moved.items():
        console.print(f"[yellow]{name.replace('_', ' ')} {getattr(settings, name)} is taken; "
                      f"using {new}[/yellow]")
    settings = settings.model_copy(update=moved)
    _run(run_demo(settings, console, seconds, rate))


@app.command()
def bench(
    events: Annotated[int, typer.Option(help="Events per measurement.")] = 20000,
    only: Annotated[str | None, typer.Option(
        help="One of: ingest, rebuild, latency, lab, mllp, recognition, mpi.")] = None,
) -> None:
    """Measure the issue's figures, each beside its same-run baseline."""
    from bench.run import run_all

    run_all(console, events, only)


if __name__ == "__main__":  # pragma: no cover
    app()


# Facility systems in (listed after the hub's own commands in --help).
app.command("mllp")(cli_adapters.mllp)
app.command("hl7-import")(cli_adapters.hl7_import)
app.command("dicom-scan")(cli_adapters.dicom_scan)
