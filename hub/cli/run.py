"""``hub broker | serve | ingest | project | demo | bench``: the hub's own processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from hub import clock
from hub.cli.common import (
    DataOpt,
    DbOpt,
    FacilitiesOpt,
    KafkaOpt,
    console,
    fail,
    run,
    settings,
    until_cancelled,
)

BENCH_PARTS = ("ingest", "rebuild", "rebuild-1m", "latency", "put", "ack", "lab", "mllp",
               "recognition", "mpi", "devices", "export", "console", "signatures")
MqttOpt = Annotated[str | None, typer.Option(
    "--mqtt", envvar="HUB_MONITORING_MQTT_URL",
    help="mqtt://HOST:PORT of the broker home meters publish to: run the MQTT device "
    "gateway in this process.")]


def mqtt_url(url: str | None) -> str | None:
    """The --mqtt address, checked before anything starts (one sentence if it is wrong)."""
    from adapters.devices.mqtt import MqttAddress
    from hub.errors import ConfigError

    if url:
        try:
            MqttAddress.parse(url)
        except ConfigError as exc:
            fail(str(exc))
    return url or None


def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 19092,
    data_dir: DataOpt = None,
) -> None:
    """Run the bundled Kafka-compatible broker (memory only) with the hub's topics."""
    from hub.log.broker import EmbeddedBroker
    from hub.log.topics import ensure_topics

    s = settings(data_dir=data_dir, embedded_broker_port=port)

    async def main() -> None:
        with EmbeddedBroker(port) as b:
            await asyncio.to_thread(ensure_topics, s)
            console.print(f"bundled broker ready on [bold]{b.bootstrap}[/bold] with topics "
                          f"{s.topics.inbound}, {s.topics.events} "
                          f"({s.events_partitions} partitions), "
                          f"{s.topics.deadletter}. It keeps nothing on disk. Ctrl-C stops.")
            await until_cancelled()

    run(main())


def serve(
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    facilities: FacilitiesOpt = None,
    host: Annotated[str, typer.Option(envvar="HUB_API_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="HUB_API_PORT")] = 8080,
    ingest: Annotated[bool, typer.Option(help="Run the inbound ingest stage.")] = True,
    projections: Annotated[bool, typer.Option(help="Run the journal and projections.")] = True,
    mqtt: MqttOpt = None,
) -> None:
    """Run the FHIR gateway and read API (plus ingest and projections unless turned off)."""
    from hub.log.broker import port_in_use
    from hub.service import Hub

    s = settings(kafka, db, data_dir, facilities, api_host=host, api_port=port)
    mqtt = mqtt_url(mqtt)
    # Before anything starts: a taken port would otherwise show only after the broker, the
    # store and the registry are up (and leave them behind).
    if port_in_use(port, "127.0.0.1" if host in ("0.0.0.0", "::", "") else host):
        fail(f"port {port} on {host} is taken: stop what runs there or pass --port")

    async def main() -> None:
        async with Hub(s) as hub:
            hub.start_api()
            hub.start_registry_watch()
            if ingest:
                hub.start_ingest()
            if projections:
                hub.start_projections()
            if mqtt:
                await hub.start_mqtt(mqtt)
            await hub.api_ready()
            console.print(f"hub serving on http://{host}:{port}/fhir (Kafka "
                          f"{s.bootstrap}, store {s.db_url}). Ctrl-C stops.")
            await until_cancelled()

    run(main())


def ingest(kafka: KafkaOpt = None, data_dir: DataOpt = None,
           facilities: FacilitiesOpt = None) -> None:
    """Run only the ingest stage: hie.inbound.v1 -> validate -> hie.events.v1."""
    from hub.collector import settle_for_batches
    from hub.service import Hub

    s = settings(kafka, None, data_dir, facilities)

    async def main() -> None:
        async with Hub(s, start_broker=False) as hub:
            task = hub.start_ingest()
            settle_for_batches()  # this process does nothing but batches from here on
            await task

    run(main())


def project(
    names: Annotated[list[str] | None, typer.Argument(help="Projections (default: all).")] = None,
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    until_caught_up: Annotated[bool, typer.Option(
        help="Exit once every event in the log is applied.")] = False,
) -> None:
    """Run only the journal and projection runners."""
    from hub.collector import settle_for_batches
    from hub.projections import all_projections
    from hub.service import Hub

    known = all_projections()
    for n in names or []:
        if n not in known:
            fail(f"unknown projection {n!r}; known: {', '.join(known)}")
    s = settings(kafka, db, data_dir, None)

    async def main() -> None:
        async with Hub(s, start_broker=False) as hub:
            tasks = hub.start_projections(names, until_caught_up=until_caught_up)
            settle_for_batches()  # this process does nothing but batches from here on
            results = await asyncio.gather(*tasks)
            for runner, stats in zip(hub.runners, results, strict=True):
                console.print(f"{runner.projection.name}: applied {stats.applied}, skipped "
                              f"{stats.skipped}, dead-lettered {stats.deadlettered}")

    run(main())


def demo(
    seconds: Annotated[float | None, typer.Option(help="Stop after N seconds.", min=0)] = None,
    rate: Annotated[float, typer.Option(
        help="Events per second the simulator publishes.", min=0.1)] = 50,
    kafka: KafkaOpt = None, db: DbOpt = None, data_dir: DataOpt = None,
    port: Annotated[int, typer.Option(help="API port.")] = 8080,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Clear the demo's store (hub.db and demo-state.json; keys stay) and "
        "start a new story instead of continuing the one in the data directory.")] = False,
    mqtt: MqttOpt = None,
) -> None:
    """Broker + gateway + ingest + journal + projections + API, and a simulated consortium."""
    from hub.demo.run import run_demo
    from hub.log.broker import free_port, port_in_use

    s = settings(kafka, db, data_dir, None, api_port=port)
    mqtt = mqtt_url(mqtt)
    # A demo should just run: if something already listens on a default port, take a free
    # one and say so (the panel printed at start shows the ports in use).
    moved = {}
    if port_in_use(s.api_port):
        moved["api_port"] = free_port()
    if s.embedded and port_in_use(s.embedded_broker_port):
        moved["embedded_broker_port"] = free_port()
    for name, new in moved.items():
        console.print(f"[yellow]{name.replace('_', ' ')} {getattr(s, name)} is taken; "
                      f"using {new}[/yellow]")
    run(run_demo(s.model_copy(update=moved), console, seconds, rate, fresh=fresh, mqtt=mqtt))


def bench(
    events: Annotated[int | None, typer.Option(
        help="Events per measurement (20,000; 1,000,000 for rebuild-1m).", min=1)] = None,
    only: Annotated[str | None, typer.Option(
        help=f"One of: {', '.join(BENCH_PARTS)}.")] = None,
    minutes: Annotated[float, typer.Option(
        help="How long the demo runs while console page loads are measured.", min=0.1)] = 10,
    peers: Annotated[bool, typer.Option(
        "--peers", help="Measure the hub beside eventsourcing, quixstreams and a bare "
        "aiokafka loop instead (make bench-peers installs them).")] = False,
    postgres_url: Annotated[str | None, typer.Option(
        envvar="HUB_BENCH_POSTGRES_URL",
        help="PostgreSQL for rebuild-1m's PostgreSQL figure (a schema of its own is made "
        "there and dropped after), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test."
        )] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Compare each ratio with the baseline file; exit 1 naming every "
        "figure that fell by more than its noise band.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        help="Baseline file for --check (default: bench/baseline.json).")] = None,
    save: Annotated[Path | None, typer.Option(
        help="Also write this run's ratios to a JSON file (python -m bench.check OUT RUN... "
        "makes a baseline from saved runs).")] = None,
) -> None:
    """Measure the hub's performance figures, each beside a baseline measured in the same
    run."""
    from bench.check import BASELINE, load_baseline, regressions, run_record

    if peers and only is not None:
        fail("--peers is a measurement of its own: leave out --only")
    if only is not None and only not in BENCH_PARTS:
        fail(f"--only {only!r} is not a measurement; one of: {', '.join(BENCH_PARTS)}")
    if save is not None and not save.parent.is_dir():
        fail(f"--save {save}: the folder {save.parent} does not exist")
    figures = None
    if check:
        try:  # before measuring: a missing baseline should not cost a whole run
            figures = load_baseline(baseline or BASELINE)
        except ValueError as exc:
            fail(str(exc))
    if peers:
        from bench.peers import run_peers

        table = run_peers(console, events or 20_000)
        console.print(table)
    else:
        from bench.run import run_all

        table = run_all(console, events, only, minutes, postgres_url)
    if save is not None:
        what = "--peers" if peers else f"--only {only}" if only else "all figures"
        save.write_text(json.dumps(run_record(table, f"hub bench {what}, "
                                              f"{clock.now():%Y-%m-%d %H:%M} UTC"), indent=2))
        console.print(f"saved this run's {len(table.ratios)} ratios to {save}")
    if figures is None:
        return
    judged = [name for name in table.ratios if name in figures]
    bad = regressions(table.ratios, figures)
    for line in bad:
        console.print(f"[red]regressed[/red] {line}", highlight=False, soft_wrap=True)
    console.print(f"--check: {len(judged)} figure(s) compared with the baseline, "
                  f"{len(bad)} regressed")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for command in (broker, serve, ingest, project, demo, bench):
        app.command()(command)
