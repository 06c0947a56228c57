"""The baseline for console page loads: a bare FastAPI + Jinja2 page, no hub code.

It renders a table of the size of the console's overview (a row per facility, per tier,
per resource type and per projection, and a chart's JSON) from numbers held in memory:
what any server-rendered page costs before it asks its store anything.

    python -m bench.bare_console --port 8082
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.templating import Jinja2Templates

ROWS = [{"name": f"facility-{i}", "accepted": 100 + i, "refused": i % 3} for i in range(40)]
SERIES = {"labels": [f"{h:02d}:{m:02d}" for h in (17, 18) for m in range(30)],
          "accepted": list(range(60)), "refused": [0] * 60}


def create_app() -> FastAPI:
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/page")
    def page(request: Request):
        return templates.TemplateResponse(request, "bare_page.html",
                                          {"rows": ROWS, "series": SERIES})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
