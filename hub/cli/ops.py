"""``hub rebuild | verify | topics``: an operator's looks and repairs."""

from __future__ import annotations

from typing import Annotated

import typer

from hub.cli.common import (
    DataOpt,
    DbOpt,
    KafkaOpt,
    console,
    existing_store,
    fail,
    progress,
    settings,
)


def rebuild(
    name: Annotated[str, typer.Argument(help="Projection to rebuild from the journal.")],
    db: DbOpt = None, data_dir: DataOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="Processes that parse and fold the journal beside the one writing (default: "
        "one per CPU; 0: fold in this process). Used by projections that allow it (the "
        "shared record) on journals of 50,000 events or more.", min=0)] = None,
) -> None:
    """Rebuild a projection from the journal into shadow tables and swap them in atomically."""
    from hub.engine.rebuild import default_workers, journal_size
    from hub.engine.rebuild import rebuild as do_rebuild
    from hub.identity import load_or_create_secret, use_identity_secret
    from hub.projections import rebuildable

    catalogue = rebuildable()
    if name not in catalogue:
        fail(f"unknown projection {name!r}; rebuildable: {', '.join(catalogue)}")
    s = settings(db=db, data_dir=data_dir)
    # The store first: with no hub run here, there is nothing to rebuild (and no secret).
    store = existing_store(s, create_tables=True)
    try:
        use_identity_secret(load_or_create_secret(s.identity_secret_path))
        total = journal_size(store)
        with progress() as bar:
            task = bar.add_task(f"rebuilding {name}", total=total)
            n = do_rebuild(store, catalogue[name], lambda k: bar.advance(task, k),
                           workers=default_workers() if workers is None else workers)
    finally:
        store.dispose()
    console.print(f"[green]rebuilt {name} from {n} journal events and swapped it in[/green]")


def verify(db: DbOpt = None, data_dir: DataOpt = None) -> None:
    """Check every journaled event's signature against the registry's keys as of its time
    (rotated keys stay verifiable); exits 1 if any fails."""
    from hub.engine.rebuild import journal_size
    from hub.registry.audit import verify_journal

    store = existing_store(settings(db=db, data_dir=data_dir))
    try:
        with progress() as bar:
            task = bar.add_task("verifying the journal", total=journal_size(store))
            n, failures, examples = verify_journal(store, lambda k: bar.advance(task, k))
    finally:
        store.dispose()
    if failures:
        console.print(f"[red]{sum(failures.values())} of {n} events do not verify:[/red] "
                      + ", ".join(f"{k} {v}" for k, v in failures.most_common()))
        for line in examples:
            console.print(f"  {line}")
        raise typer.Exit(1)
    console.print(f"[green]all {n} journaled events verify against the registry[/green]")


def topics(kafka: KafkaOpt = None) -> None:
    """Create the hub's topics on the given Kafka (idempotent)."""
    from hub.log.topics import ensure_topics

    s = settings(kafka)
    ensure_topics(s)
    console.print(f"topics ready on {s.bootstrap}")


def register(app: typer.Typer) -> None:
    for command in (rebuild, verify, topics):
        app.command()(command)
