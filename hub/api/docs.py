"""API documentation pages that work without the internet.

FastAPI's default ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, which a
hospital network without internet access never reaches: the pages stay blank. The hub
serves both from the files vendored in the ``fastapi-standalone-docs`` package (Swagger UI
under the Apache 2.0 licence, ReDoc and FastAPI's favicon under MIT; the licence files are
served beside them). Only its static files are used, not its ``StandaloneDocs`` helper,
which patches FastAPI functions process-wide.

* ``/docs`` — Swagger UI; its script and style sheet under ``/docs/``.
* ``/redoc`` — ReDoc; its script under ``/redoc/`` (the packaged ReDoc script looks for its
  footer logo at ``<page>/logo-mini.svg``, so the folder sits under the page's own path).
* ``/docs/fastapi/favicon.png`` — the icon of both pages.

Swagger UI's online validator badge (an image from validator.swagger.io) is turned off and
ReDoc is told not to load Google Fonts, so the pages make no request to another host.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS = Path(fastapi_standalone_docs.__path__[0]) / "static"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
FAVICON = f"{DOCS_URL}/fastapi/favicon.png"


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc`` to an app created with ``docs_url=redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{root}{DOCS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{FAVICON}",
            oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — ReDoc",
            redoc_js_url=f"{root}{REDOC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{FAVICON}",
            with_google_fonts=False,
        )

    # The more specific mount first: Starlette tries mounts in order.
    app.mount(f"{DOCS_URL}/fastapi", StaticFiles(directory=ASSETS / "fastapi"),
              name="docs-favicon")
    app.mount(DOCS_URL, StaticFiles(directory=ASSETS / "swagger"), name="docs-assets")
    app.mount(REDOC_URL, StaticFiles(directory=ASSETS / "redoc"), name="redoc-assets")
