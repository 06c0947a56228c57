"""Calling a running hub's API from a terminal, with a member facility's token."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer

from hub.cli.common import fail, hub_command
from hub.errors import ConfigError, HubError

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOpt = Annotated[str, typer.Option("--url", envvar="HUB_URL",
                                     help="The running hub's API.")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="HUB_TOKEN", show_default=False,
    help="A member facility's bearer token (or set HUB_TOKEN).")]
# Connecting is quick or hopeless; an answer may take a while (the index serialises its
# decisions, a check reads many results).
TIMEOUT = httpx.Timeout(90, connect=5)


class HubUnreachable(HubError):
    """No hub answered at the URL given."""


class HubRefused(HubError):
    """The hub answered with an error (4xx: the request was wrong or not allowed)."""


def call(method: str, url: str, token: str | None, path: str, **kwargs: Any) -> dict:
    """The hub's JSON answer; a mistake (no token, bad URL, no hub, a refusal) raises a
    HubError that says it in one sentence."""
    if not token or not token.strip():
        raise ConfigError("no token given: pass --token TOKEN or set HUB_TOKEN (a member "
                          "facility's gateway token, from the consortium file)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not an http(s) URL such as {DEFAULT_URL}")
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {token.strip()}"}, **kwargs)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise HubUnreachable(f"no hub answered at {url} ({exc.__class__.__name__}: {exc}); "
                             f"start one with {hub_command()} serve or pass --url") from exc
    body: Any = {}
    if resp.headers.get("content-type", "").split(";")[0].endswith("json"):
        try:
            body = resp.json()
        except ValueError:
            body = {}
    if resp.status_code >= 400:
        issues = (body.get("issue") if isinstance(body, dict) else None) or [
            {"diagnostics": resp.text.strip() or resp.reason_phrase}]
        message = (f"the hub at {url} answered {resp.status_code}: "
                   + "; ".join(i.get("diagnostics", "") for i in issues))
        if resp.status_code >= 500:  # the hub's trouble, not the operator's mistake
            fail(message, code=1)
        raise HubRefused(message)
    if not isinstance(body, dict):
        raise HubUnreachable(f"{url} answered, but not like a hub (no JSON): is --url right?")
    return body
