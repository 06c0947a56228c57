"""Log in with an existing credential, log out.

The login form is protected against login CSRF by a double-submitted nonce (a SameSite=
Strict cookie and a hidden field that must match); the session cookie is signed, HttpOnly,
SameSite=Strict, and Secure when the console is served over HTTPS.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hub.access import audit_store
from hub.access.rules import refused_credential
from hub.console.session import COOKIE, MAX_AGE_SECONDS, csrf_ok, open_session
from hub.console.web import (
    LOGIN_NONCE,
    context,
    form,
    login_nonce,
    render,
    safe_next,
    secured,
    session_of,
)
from hub.envelope import now_rfc3339
from hub.errors import AuthError

router = APIRouter(prefix="/console", include_in_schema=False)


def _login_page(request: Request, next_: str, message: str | None = None,
                status: int = 200) -> Response:
    nonce = login_nonce()
    page = render(request, None, "login.html", status=status, nonce=nonce, next=next_,
                  message=message)
    page.set_cookie(LOGIN_NONCE, nonce, max_age=900, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/console")
    return page


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    target = safe_next(fields.get("next"))
    nonce = request.cookies.get(LOGIN_NONCE) or ""
    if not nonce or not hmac.compare_digest(nonce, fields.get("nonce", "")):
        return _login_page(request, target, "The form expired: please log in again.", 400)
    ctx = context(request)
    try:
        _, cookie = open_session(ctx.directory, fields.get("token", ""))
    except AuthError:
        # Audited like any request refused with 401: the token's digest, never the token.
        attempt = refused_credential("POST", "/console/login", "", fields.get("token"), "",
                                     now_rfc3339())
        await run_in_threadpool(audit_store.record, ctx.store, [attempt])
        return _login_page(request, target, "Unknown credential: give your facility's bearer "
                           "token or your app token from the consortium file.", 401)
    response = secured(RedirectResponse(target, status_code=303))
    response.set_cookie(COOKIE, cookie, max_age=MAX_AGE_SECONDS, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        path="/console")
    response.delete_cookie(LOGIN_NONCE, path="/console")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = session_of(request)
    fields = await form(request)
    if session is not None and not csrf_ok(session, fields.get("csrf")):
        return render(request, session, "refused.html", status=403,
                      message="The form's CSRF token does not match your session.")
    response = secured(RedirectResponse("/console/login", status_code=303))
    response.delete_cookie(COOKIE, path="/console")
    return response
