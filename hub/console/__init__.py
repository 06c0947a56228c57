"""The consortium's web console at ``/console``: server-rendered pages over the same
projections, credentials and audit trail as the read API (see README "Web console")."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

__all__ = ["install_console"]


def install_console(app: FastAPI) -> None:
    """Add the console's pages and its static files (CSS, script, vendored Chart.js)."""
    from hub.console import deadletter_pages, login, pages, stats_pages
    from hub.console.web import HERE, ConsoleAnswer

    async def answer(_, exc: ConsoleAnswer):
        return exc.response

    app.add_exception_handler(ConsoleAnswer, answer)

    app.mount("/console/static", StaticFiles(directory=HERE / "static"),
              name="console-static")
    for module in (login, pages, deadletter_pages, stats_pages):
        app.include_router(module.router)
