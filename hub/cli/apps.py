"""``hub app``: the downstream-app kit (``adapters/apps``): the example notifier, and the
contract files generated from the feeds' models."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from hub.cli.common import FacilitiesOpt, KafkaOpt, console, fail, quiet_kafka, run, settings
from hub.errors import BrokerError

apps_app = typer.Typer(help="Downstream apps on the hub's change feeds (faststream).",
                       no_args_is_help=True)


@apps_app.command("notifier")
def notifier(
    facility: Annotated[str, typer.Option(help="The clinic to notify, e.g. township-1.")],
    to: Annotated[str, typer.Option(help="Topic the notifications go to (default: "
                                         "clinic.notifications.v1).")] = "",
    kafka: KafkaOpt = None, facilities: FacilitiesOpt = None,
) -> None:
    """Tell a clinic when a patient it referred gets an abnormal result or a report.

    Reads hie.referral.v1, hie.lab.v1 and hie.imaging.v1 and publishes each notification to
    clinic.notifications.v1 (key: the clinic), printing it too. Ctrl-C stops it.
    """
    from adapters.apps.notifier import NOTIFICATIONS, Notifier
    from hub.log.topics import ensure_topics
    from hub.registry.consortium_file import read_consortium

    s = settings(kafka=kafka, facilities=facilities)
    read_consortium(s.facilities_file).get(facility)  # a typo fails here, in one line
    topic = to or NOTIFICATIONS
    # Data, not markup: a conclusion may hold brackets.
    app = Notifier(s, facility, topic,
                   say=lambda text: console.print(text, markup=False, highlight=False))

    async def main() -> None:
        from aiokafka.errors import KafkaError

        # faststream logs each partition assignment at INFO; the app prints what matters.
        logging.getLogger("faststream").setLevel(logging.WARNING)
        # Fails fast and in one line when no broker answers; creates the topics a hub that
        # has not started yet would, so the subscriptions find them.
        await asyncio.to_thread(ensure_topics, s, None, {topic: s.events_partitions})
        with quiet_kafka():
            try:
                await app.broker.start()
            except KafkaError as exc:
                raise BrokerError(f"cannot read the feeds from {s.bootstrap}: {exc}") from exc
        t = s.topics
        console.print(f"notifier for [bold]{facility}[/bold]: reading {t.referral}, {t.lab} "
                      f"and {t.imaging} on {s.bootstrap}; notifications to {topic}")
        try:
            await asyncio.Event().wait()
        finally:
            await app.broker.stop()

    run(main())


@apps_app.command("schemas")
def schemas(check: Annotated[bool, typer.Option(
        "--check", help="Only say which files differ (exit code 1 if any).")] = False) -> None:
    """Write the feeds' JSON Schemas and the AsyncAPI document into schemas/, from the models.
    """
    from adapters.apps.contract import stale, write
    from hub.schemas import schemas_dir

    folder = schemas_dir()
    if check:
        names = stale(folder)
        if names:
            fail(f"out of date in {folder}: {', '.join(names)} (run hub app schemas)", 1)
        console.print("schemas/ matches the models")
        return
    names = write(folder)
    console.print(f"wrote {', '.join(names)}" if names else "schemas/ already matches")
