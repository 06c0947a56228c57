"""Logging in to the web console over HTTP, as a browser's form would."""

from __future__ import annotations

import re

import httpx

_NONCE = re.compile(r'name="nonce" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(client: httpx.AsyncClient, token: str, next_: str = "/console"
                ) -> httpx.Response:
    """Fetch the login form (its nonce cookie lands in ``client``) and post ``token``."""
    form = await client.get("/console/login")
    nonce = _NONCE.search(form.text).group(1)  # type: ignore[union-attr]
    return await client.post("/console/login", data={"nonce": nonce, "next": next_,
                                                      "token": token})


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token a console page puts in its forms."""
    return _CSRF.search(page.text).group(1)  # type: ignore[union-attr]
