"""What every ``hub`` command shares: option types, settings, the async runner, and how an
operator's mistake is reported (one line on stderr, exit code 2, never a traceback)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from typer.core import TyperGroup

from hub import logs
from hub.aio import run_loop
from hub.config import Settings, load_settings
from hub.errors import ConfigError, HubError
from hub.store.db import Store, open_existing_store

console = Console()
# Errors never wrap: an operator (or a script) reads one line, whatever the terminal width.
err_console = Console(stderr=True, soft_wrap=True)

# Expected operator situations. OSError covers missing or unreadable files and refused
# connections that a library let through untranslated; anything else is a bug and may raise.
EXPECTED = (HubError, OSError)
USAGE_EXIT = 2

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


def hub_command() -> str:
    """How to type this ``hub`` command in a hint: ``hub`` when that is on PATH, else the
    absolute path of the entry point that is running (e.g. ``.venv/bin/hub`` un-activated)."""
    ours = _entry_point()
    if ours is None:
        return f"{shlex.quote(sys.executable)} -m hub.cli"
    found = shutil.which("hub")
    # Another program may be called hub (GitHub's, for one): only ours counts.
    if found and Path(found).resolve() == ours.resolve():
        return "hub"
    return shlex.quote(str(ours))


def _entry_point() -> Path | None:
    argv0 = Path(sys.argv[0])
    if argv0.name == "hub" and argv0.is_file():
        return argv0.absolute()
    beside = Path(sys.executable).parent / "hub"  # run as `python -m hub.cli` in a venv
    return beside.absolute() if beside.is_file() else None


def fail(message: str, code: int = USAGE_EXIT) -> NoReturn:
    """Report an operator's mistake in one line and stop (exit code 2 unless told)."""
    err_console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}")
    raise typer.Exit(code)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc) or exc.__class__.__name__


class HubGroup(TyperGroup):
    """The top-level group: turns every expected error from any command into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EXPECTED as exc:
            fail(describe(exc))


def one_line_summaries(app: typer.Typer) -> None:
    """Command lists show each docstring's first paragraph on one line (typer keeps the
    source's line breaks there, which breaks sentences mid-way in ``--help``)."""
    for info in app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.strip().split("\n\n")[0].split())
    for group in app.registered_groups:
        if group.typer_instance is not None:
            one_line_summaries(group.typer_instance)


def settings(kafka: str | None = None, db: str | None = None, data_dir: Path | None = None,
             facilities: Path | None = None, **more: object) -> Settings:
    try:
        s = load_settings(kafka_bootstrap=kafka, database_url=db, data_dir=data_dir,
                          facilities_file=facilities, **more)
    except ValidationError as exc:
        problems = "; ".join(f"HUB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"bad setting {problems}") from exc
    if s.kafka_bootstrap is not None:
        check_bootstrap(s.kafka_bootstrap)
    return s


def check_bootstrap(value: str) -> None:
    """HOST:PORT[,HOST:PORT...]: a typo here would otherwise surface as a silent broker."""
    for server in value.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--kafka {value!r} is not HOST:PORT (e.g. 127.0.0.1:9092)")


def existing_store(s: Settings, create_tables: bool = False) -> Store:
    """The store a hub has written, for commands that read it; never creates one."""
    return open_existing_store(s.db_url, create_tables=create_tables,
                               hint=f"start one with {hub_command()} serve or "
                               f"{hub_command()} demo")


def progress() -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), console=console)


def run(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro``; the first Ctrl-C or SIGTERM cancels it so it drains (a hub finishes
    what it accepted and lets the journal catch up, within ``HUB_STOP_TIMEOUT_S``); a second
    one exits at once. Errors propagate to the top-level handler (HubGroup)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python serves only admin calls here; each retry it logs is noise beside the one
    # BrokerError the hub raises when Kafka stays silent.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # aiokafka logs each failed attempt of each client; the hub says "broker away" once.
    logs.install()

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                err_console.print("stopping: finishing accepted work and draining the journal "
                                  "(press Ctrl-C again to exit at once)")
                task.cancel()
                return
            # The operator insists. Whatever the journal committed is kept; the bundled
            # broker is stopped by the kernel with us (see EmbeddedBroker).
            err_console.print("exiting at once")
            sys.stderr.flush()
            os._exit(128 + sig)

        if threading.current_thread() is threading.main_thread():  # else: embedded use
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await task
        except asyncio.CancelledError:
            console.print("[yellow]stopped[/yellow]")

    run_loop(main())


@contextmanager
def quiet_kafka() -> Iterator[None]:
    """aiokafka logs every failed connection attempt; a command that reports the failure
    itself in one line silences them while it connects."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def until_cancelled() -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return
