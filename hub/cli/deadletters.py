"""``hub deadletters``: what was refused and why, read from the SQL store.

Needs no broker and no running hub: the letters are kept in SQL beside the journal. Exit
codes: 0 listed or saved, 1 store error or unknown id, 2 no store yet or a bad option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.markup import escape
from rich.table import Table

from hub.cli.common import console, existing_store, fail, settings
from hub.deadletters.read import StoredLetter, get_dead_letter, list_dead_letters
from hub.store.db import Store
from hub.store.schema import dead_letters as table


def _open(db: str | None, data_dir: Path | None) -> Store:
    """The existing store; one sentence and exit 2 if there is none (never create it)."""
    store = existing_store(settings(db=db, data_dir=data_dir))
    with store.connect() as conn:
        present = sa.inspect(conn).has_table(table.name)
    if not present:
        store.dispose()
        fail(f"the store at {store.engine.url} has no dead letters yet: no hub keeping them "
             "in SQL has run on it")
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
    try:
        store = _open(db, data_dir)
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
        fail(f"--since / --until: {exc}")
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
        fail(f"no dead letter {letter_id}", code=1)
    path.write_bytes(letter.original or b"")
    note = " (the body was over the size limit and was not kept)" if not letter.original else ""
    console.print(f"wrote {len(letter.original or b'')} bytes to {path}: the input refused at "
                  f"{letter.refused_at} by {escape(letter.entry)} ({escape(letter.reason)})"
                  f"{note}")
