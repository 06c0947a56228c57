"""``hub mpi ...``: the patient index's review queue and decisions, from a terminal.

Talks to a running hub over its API (the index's decisions are serialised by the hub that
runs it), with a member facility's token: the decision is recorded under that facility.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

mpi_app = typer.Typer(help="The master patient index: review queue, confirm / reject, "
                      "unlink, merge (through a running hub's API).", no_args_is_help=True)
console = Console()

UrlOpt = Annotated[str, typer.Option("--url", envvar="HUB_URL",
                                     help="The running hub's API.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="HUB_TOKEN",
                                       help="A member facility's bearer token.")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _call(method: str, url: str, token: str, path: str, **kwargs: Any) -> dict:
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=90,
                             headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] no hub answered at {url} ({exc}); start one with "
                      "`hub serve` or pass --url")
        raise typer.Exit(1) from exc
    body = resp.json() if resp.headers.get("content-type", "").endswith("json") else {}
    if resp.status_code >= 400:
        issues = body.get("issue") or [{"diagnostics": resp.text}]
        console.print(f"[red]error {resp.status_code}:[/red] "
                      + "; ".join(i.get("diagnostics", "") for i in issues))
        raise typer.Exit(1)
    return body


def _print_person(result: dict) -> None:
    console.print(f"{result['record']} belongs with: [bold]{', '.join(result['records'])}"
                  "[/bold]")


@mpi_app.command("reviews")
def reviews(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "",
            status: Annotated[str, typer.Option(
                help="requested (open), completed (linked) or rejected")] = "requested"
            ) -> None:
    """The review queue: grey-zone matches and identity conflicts."""
    items = _call("GET", url, token, "/mpi/reviews", params={"status": status})["reviews"]
    table = Table(title=f"patient index reviews ({status})")
    for col in ("id", "kind", "record", "candidate", "score", "reasons"):
        table.add_column(col, overflow="fold")
    for r in items:
        table.add_row(r["id"], r["kind"], r["record"], r["candidate_record"], f"{r['score']:g}",
                      "; ".join(r["reasons"]))
    console.print(table if items else f"no {status} reviews")


@mpi_app.command("confirm")
def confirm(review_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Same resident: link the record to the candidate."""
    _print_person(_call("POST", url, token, f"/mpi/reviews/{review_id}/confirm"))


@mpi_app.command("reject")
def reject(review_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Different residents: keep them apart."""
    _print_person(_call("POST", url, token, f"/mpi/reviews/{review_id}/reject"))


@mpi_app.command("unlink")
def unlink(record: Annotated[str, typer.Argument(help="<facility>.<patient id>")],
           url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Take a record out of its person (a wrong link): it stands alone again."""
    _print_person(_call("POST", url, token, "/mpi/unlink", json={"record": record}))


@mpi_app.command("merge")
def merge(survivor: Annotated[str, typer.Argument(help="Record whose person survives.")],
          merged: Annotated[str, typer.Argument(help="Record whose person is merged in.")],
          url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Merge two persons (a missed link)."""
    _print_person(_call("POST", url, token, "/mpi/merge",
                        json={"survivor": survivor, "merged": merged}))


@mpi_app.command("show")
def show(record: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Which records belong with this one."""
    _print_person(_call("GET", url, token, f"/mpi/records/{record}"))
