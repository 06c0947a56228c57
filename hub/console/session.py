"""The console's login session: a signed cookie naming who logged in, and its CSRF token.

No user store: a login presents an existing credential (a facility's bearer token or an
app token from the consortium file). The cookie holds the principal's kind and id, a digest
of the credential and a random CSRF nonce, signed (itsdangerous) with a key derived from
the hub's identity secret, which replicas share. Each request looks the principal up again
and compares the digest, so a token rotated or removed in the consortium file ends every
session opened with it at once. The cookie never holds the credential itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from hub.access.rules import Principal
from hub.errors import AuthError, ConfigError
from hub.facilities import FacilityDirectory
from hub.identity import identity_secret

COOKIE = "hub_console"
MAX_AGE_SECONDS = 8 * 3600  # one working shift
_SALT = "hie-console-session"
_PROCESS_KEY = secrets.token_bytes(32)


def _key() -> bytes:
    # A hub that has not loaded its identity secret (an app built only to list its routes)
    # still signs, with a key that lives as long as the process.
    try:
        return hashlib.sha256(b"hie-console\x00" + identity_secret()).digest()
    except ConfigError:
        return _PROCESS_KEY


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_key(), salt=_SALT)


def credential_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str


def open_session(directory: FacilityDirectory, token: str) -> tuple[Session, str]:
    """Log in with ``token``: the session and the signed cookie value; AuthError if the
    token is nobody's."""
    principal = directory.reader(token.strip())
    csrf = secrets.token_urlsafe(24)
    value = _serializer().dumps({"k": principal.kind, "id": principal.id,
                                 "d": credential_digest(token.strip()), "c": csrf})
    return Session(principal, csrf), value


def _credential(directory: FacilityDirectory, kind: str, ident: str) -> str | None:
    if kind == "facility":
        found = directory.get(ident)
        return found.token if found else None
    app = directory.apps.get(ident)
    return app.token if app else None


def read_session(directory: FacilityDirectory, cookie: str | None) -> Session | None:
    """The session a cookie stands for, or None: unsigned, expired, or its credential
    changed or gone since the login."""
    if not cookie:
        return None
    try:
        data = _serializer().loads(cookie, max_age=MAX_AGE_SECONDS)
        token = _credential(directory, data["k"], data["id"])
        if token is None or not hmac.compare_digest(credential_digest(token), data["d"]):
            return None
        return Session(directory.reader(token), data["c"])
    except (BadSignature, KeyError, TypeError, AuthError):
        return None


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
