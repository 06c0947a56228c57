"""``hub mpi ...``: the patient index's review queue and decisions, from a terminal.

Talks to a running hub over its API (the index's decisions are serialised by the hub that
runs it), with a member facility's token: the decision is recorded under that facility.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from hub.cli.client import DEFAULT_URL, TokenOpt, UrlOpt, call
from hub.cli.common import console, fail

mpi_app = typer.Typer(help="The master patient index: review queue, confirm / reject, "
                      "unlink, merge (through a running hub's API).", no_args_is_help=True)
REVIEW_STATES = ("requested", "completed", "rejected")


def _print_person(result: dict) -> None:
    console.print(f"{result['record']} belongs with: [bold]{', '.join(result['records'])}"
                  "[/bold]")


@mpi_app.command("reviews")
def reviews(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None,
            status: Annotated[str, typer.Option(
                help="requested (open), completed (linked) or rejected")] = "requested"
            ) -> None:
    """The review queue: grey-zone matches and identity conflicts."""
    if status not in REVIEW_STATES:
        fail(f"--status {status!r}: one of {', '.join(REVIEW_STATES)}")
    items = call("GET", url, token, "/mpi/reviews", params={"status": status})["reviews"]
    table = Table(title=f"patient index reviews ({status})")
    for col in ("id", "kind", "record", "candidate", "score", "reasons"):
        table.add_column(col, overflow="fold")
    for r in items:
        table.add_row(r["id"], r["kind"], r["record"], r["candidate_record"], f"{r['score']:g}",
                      "; ".join(r["reasons"]))
    console.print(table if items else f"no {status} reviews")


@mpi_app.command("confirm")
def confirm(review_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Same resident: link the record to the candidate."""
    _print_person(call("POST", url, token, f"/mpi/reviews/{review_id}/confirm"))


@mpi_app.command("reject")
def reject(review_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Different residents: keep them apart."""
    _print_person(call("POST", url, token, f"/mpi/reviews/{review_id}/reject"))


@mpi_app.command("unlink")
def unlink(record: Annotated[str, typer.Argument(help="<facility>.<patient id>")],
           url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Take a record out of its person (a wrong link): it stands alone again."""
    _print_person(call("POST", url, token, "/mpi/unlink", json={"record": record}))


@mpi_app.command("merge")
def merge(survivor: Annotated[str, typer.Argument(help="Record whose person survives.")],
          merged: Annotated[str, typer.Argument(help="Record whose person is merged in.")],
          url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Merge two persons (a missed link)."""
    _print_person(call("POST", url, token, "/mpi/merge",
                        json={"survivor": survivor, "merged": merged}))


@mpi_app.command("show")
def show(record: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Which records belong with this one."""
    _print_person(call("GET", url, token, f"/mpi/records/{record}"))
