"""``hub deadletters``: what was refused and why, read from the SQL store.

Needs no broker and no running hub: the letters are kept in SQL beside the journal. Exit
codes: 0 listed or saved, 1 store error or unknown id, 2 no store yet or a bad option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.config import load_settings
from hub.deadletters.read import StoredLetter, get_dead_letter, list_dead_letters
from hub.errors import HubError
from hub.store.db import Store, open_store, sqlite_file
from hub.store.schema import dead_letters as table

console = Console()


def _open(url: str) -> Store:
    """The existing store; exit 2 with one sentence if there is none (never create it)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        console.print(f"No hub store at {path} yet, so nothing has been dead-lettered there "
                      "(give --db or --data-dir if the hub keeps its store elsewhere).")
        raise typer.Exit(2)
    store = open_store(url, create=False)
    with store.connect() as conn:
        present = sa.inspect(conn).has_table(table.name)
    if not present:
        store.dispose()
        console.print(f"The store at {url} has no dead letters yet: no hub keeping them in "
                      "SQL has run on it.")
        raise typer.Exit(2)
    return store


def deadletters(
    reason: Annotated[str | None, typer.Option(
        help="Only these reason codes, e.g. invalid-json,bad-signature.",
        show_default=False)] = None,
    facility: Annotated[str | None, typer.Option(
        help="Only from these facilities (a,b).", show_default=False)] = None,
    entry: Annotated[str | None, typer.Option(
        help="Only refused at: gateway, ingest, projection:<name>, hl7v2.",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        help="From this time: 2026-11-23T08:00:00+08:00, a date, or 30m/2h/7d ago.",
        show_default=False)] = None,
    until: Annotated[str | None, typer.Option(
        help="Before this time (a date includes that day).", show_default=False)] = None,
    event_id: Annotated[str | None, typer.Option(
        "--event-id", help="Only letters about this event id.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="Show at most this many, newest last.")] = 20,
    save: Annotated[tuple[str, Path] | None, typer.Option(
        "--save", metavar="ID FILE", show_default=False,
        help="Write that dead letter's original bytes, exactly, to FILE.")] = None,
    db: Annotated[str | None, typer.Option(
        "--db", envvar="HUB_DATABASE_URL", show_default=False,
        help="SQLAlchemy URL of the hub's store. Default: SQLite in --data-dir.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="HUB_DATA_DIR", show_default=False,
        help="Where the hub's SQLite file lives.")] = None,
) -> None:
    """What was refused, and why (from the store: works while the hub is stopped)."""
    settings = load_settings(database_url=db, data_dir=data_dir)
    try:
        store = _open(settings.db_url)
        try:
            if save is not None:
                _save(get_dead_letter(store, save[0]), *save)
                return
            rows = list_dead_letters(store, reason=reason, facility=facility, since=since,
                                     until=until, event_id=event_id, entry=entry,
                                     limit=limit)
        finally:
            store.dispose()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since / --until") from exc
    except HubError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if not rows:
        console.print("No dead letters match.")
        return
    out = Table(title=f"dead letters (newest last; {len(rows)} shown)")
    for col in ("id", "refused at", "entry", "reason", "facility", "subject / event", "detail"):
        out.add_column(col, overflow="fold")
    for r in reversed(rows):  # what senders wrote is text, never rich markup
        out.add_row(*(escape(v) for v in (r.id, r.refused_at, r.entry, r.reason,
                                          r.facility or "", r.subject or r.event_id or "",
                                          r.detail[:160])))
    console.print(out)


def _save(letter: StoredLetter | None, letter_id: str, path: Path) -> None:
    if letter is None:
        console.print(f"[red]error:[/red] no dead letter {escape(letter_id)}")
        raise typer.Exit(1)
    path.write_bytes(letter.original or b"")
    note = " (the body was over the size limit and was not kept)" if not letter.original else ""
    console.print(f"wrote {len(letter.original or b'')} bytes to {path}: the input refused at "
                  f"{letter.refused_at} by {escape(letter.entry)} ({escape(letter.reason)})"
                  f"{note}")
