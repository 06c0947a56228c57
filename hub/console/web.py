"""What every console page shares: templates, the login session, CSRF, security headers.

Pages are plain HTML forms and links (every filter is a GET form, every change a POST form
carrying the session's CSRF token); the only script draws the charts with the vendored
Chart.js from data the page embeds as JSON.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hub.api.deps import HubContext
from hub.console.access import PAGES, Page, may_see, visible_pages
from hub.console.session import COOKIE, Session, read_session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
LOGIN_NONCE = "hub_console_login"
MAX_FORM_BYTES = 2_000_000  # a dead letter's fixed body is the largest form
# Everything from the hub itself; no inline script (chart data travel as JSON, not code).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def context(request: Request) -> HubContext:
    return request.app.state.hub


def session_of(request: Request) -> Session | None:
    return read_session(context(request).directory, request.cookies.get(COOKIE))


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)


def safe_next(target: str | None) -> str:
    """Only a console path: a login form must not send the browser elsewhere."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return "/console"


class ConsoleAnswer(Exception):
    """Raised by a page's dependency: answer with ``response`` instead of the page (the
    login form for no session, a refusal for a page the login may not see)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def needs_session(request: Request) -> Session:
    """A dependency: the login session, or to the login form."""
    session = session_of(request)
    if session is None:
        raise ConsoleAnswer(to_login(request))
    return session


def for_page(path: str) -> Callable[[Request], Session]:
    """A dependency: the login session, if its principal may see the page at ``path``."""
    page = next(p for p in PAGES if p.path == path)

    def session_for(request: Request) -> Session:
        session = needs_session(request)
        if not may_see(session.principal, page):
            who = session.principal
            raise ConsoleAnswer(refused(request, session, f"{who.kind} {who.id} has no "
                                        f"access to {page.scope}"))
        return session

    return session_for


SessionDep = Annotated[Session, Depends(needs_session)]


def render(request: Request, session: Session | None, name: str, status: int = 200,
           **values: Any) -> HTMLResponse:
    pages: list[Page] = visible_pages(session.principal) if session else []
    response = templates.TemplateResponse(
        request, name, {"session": session, "pages": pages, "path": request.url.path,
                        **values}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def refused(request: Request, session: Session, message: str) -> HTMLResponse:
    return render(request, session, "refused.html", status=403, message=message)


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                         keep_blank_values=True).items()}


def login_nonce() -> str:
    return secrets.token_urlsafe(24)


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def chart(kind: str, labels: list, title: str, stacked: bool = False,
          **series: list) -> dict[str, Any]:
    """What static/console.js hands to Chart.js: a bar or line chart of named series."""
    return {"type": kind, "labels": labels, "title": title, "stacked": stacked,
            "datasets": [{"label": name.replace("_", " "), "data": data}
                         for name, data in series.items()]}
