"""``hub recognition check``: the order-time check, from a terminal (through a running hub)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from hub.cli.client import DEFAULT_URL, TokenOpt, UrlOpt, call
from hub.cli.common import console, fail

recognition_app = typer.Typer(help="Mutual test recognition (检查检验结果互认).",
                              no_args_is_help=True)


@recognition_app.command("check")
def check(patient: Annotated[str, typer.Option(help="Patient/<facility>.<id>")],
          items: Annotated[str, typer.Option(help="Catalogue item codes, comma-separated "
                                                  "(e.g. GLU,HBA1C,CT-HEAD)")],
          time: Annotated[str | None, typer.Option(help="Order time (RFC 3339); default "
                                                        "now")] = None,
          url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Which ordered items a prior result can stand in for, and why (not)."""
    codes = [i.strip() for i in items.split(",") if i.strip()]
    if not codes:
        fail("--items names no catalogue item (e.g. --items GLU,HBA1C)")
    body: dict = {"patient": patient, "items": codes}
    if time:
        try:
            datetime.fromisoformat(time.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--time {time!r} is not an RFC 3339 time (e.g. 2026-06-01T09:30:00+08:00)")
        body["time"] = time
    answer = call("POST", url, token, "/recognition/$check", json=body)
    table = Table(title=f"recognition for {answer['patient']} on {answer['ordered']}")
    for col in ("item", "verdict", "result", "from", "date", "why"):
        table.add_column(col, overflow="fold")
    for it in answer["items"]:
        if it["recognisable"]:
            best = it["recognisable"][0]
            table.add_row(f"{it['item']} {it['name']}", f"[green]{it['mark']} recognisable"
                          "[/green]", best["result"], best["facility"], best["date"],
                          f"{best['why']}; valid through {best['valid_through']}")
        else:
            table.add_row(f"{it['item']} {it['name']}", "[yellow]test[/yellow]", "", "", "",
                          it["reason"] or "")
    console.print(table)
