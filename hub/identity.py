"""The consortium's identity secret, and keeping national IDs out of projections in clear.

The master patient index compares national ID and health-card numbers only as HMAC-SHA256
digests under this secret; the shared record stores the digest in place of the number.
Every process that folds events (hub, ``hub rebuild``) must use the same secret, or digests
will not compare: replicas share one file (``HUB_IDENTITY_SECRET_FILE``). Changing the
secret means rebuilding the projections from the journal, which keeps events as received.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from hub.errors import ConfigError
from hub.mpi.demographics import HEALTH_CARD_SYSTEM, NATIONAL_ID_SYSTEM, keyed_hash

HASHED_SYSTEMS = {NATIONAL_ID_SYSTEM: "urn:hie:keyed-hash:national-id",
                  HEALTH_CARD_SYSTEM: "urn:hie:keyed-hash:health-card"}

_secret: bytes | None = None


def use_identity_secret(secret: bytes) -> None:
    global _secret
    if len(secret) < 16:
        raise ConfigError("the identity secret must be at least 16 bytes")
    _secret = secret


def current_identity_secret() -> bytes | None:
    """The loaded secret, if any: for worker processes that must hash the same way."""
    return _secret


def identity_secret() -> bytes:
    if _secret is None:
        raise ConfigError("the identity secret is not loaded (hub.identity.use_identity_secret)")
    return _secret


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path`` (hex), generated on first start with mode 0600."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another replica wrote it first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the identity secret {path} (hex): {exc}") from exc


def redact_identifiers(patient: dict[str, Any]) -> dict[str, Any]:
    """``patient`` with national ID and health-card values replaced by their keyed hashes
    (under their own system, so nobody mistakes a digest for a number)."""
    idents = patient.get("identifier")
    if not isinstance(idents, list) or not any(
            isinstance(i, dict) and i.get("system") in HASHED_SYSTEMS for i in idents):
        return patient
    secret = identity_secret()
    out = []
    for i in idents:
        if isinstance(i, dict) and i.get("system") in HASHED_SYSTEMS and \
                isinstance(i.get("value"), str):
            i = {**i, "system": HASHED_SYSTEMS[i["system"]],
                 "value": keyed_hash(i["value"], secret)}
        out.append(i)
    return {**patient, "identifier": out}


def redact_body(data: bytes, patient: dict[str, Any]) -> bytes:
    """:func:`redact_identifiers` on the raw JSON, by replacing the numbers and systems in
    place: the rebuild's hot path avoids re-serialising the resource. Every occurrence of
    the number is replaced, wherever the sender also wrote it. Falls back to re-serialising
    when the number is not spelled in the bytes as orjson would spell it."""
    secret = identity_secret()
    out = data
    for i in patient.get("identifier") or ():
        if not isinstance(i, dict) or i.get("system") not in HASHED_SYSTEMS or \
                not isinstance(i.get("value"), str):
            continue
        spelled = orjson.dumps(i["value"])
        if spelled not in out:
            return orjson.dumps(redact_identifiers(patient))
        out = out.replace(spelled, orjson.dumps(keyed_hash(i["value"], secret)))
        out = out.replace(orjson.dumps(i["system"]), orjson.dumps(HASHED_SYSTEMS[i["system"]]))
    return out
