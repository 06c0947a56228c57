"""Ed25519 signatures over events: who published what.

A facility signs with its private key, which never leaves the facility; the registry holds
only its public keys, so the hub cannot forge a facility's event. The HTTP gateway cannot
sign with the facility's key, so it signs with the hub's own key: that signature says "the
hub authenticated this facility's credential and accepted this event for it".

Header format: ``ce_signature: ed25519;kid=<key id>;sig=<base64url>``. The key id is
``<owner>#<n>`` (owner = facility id, or ``hub``) so a verifier knows which key to use, and
old events stay verifiable after a rotation because the registry keeps retired keys.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.envelope import HUB_ID, Addressed, Envelope
from hub.errors import AuthError, ConfigError

SCHEME = "ed25519"
HUB_OWNER = HUB_ID


def signing_input(env: Addressed) -> bytes:
    """The bytes a signature covers: every attribute that routes or identifies the event."""
    head = "\n".join((env.id, env.source, env.type, env.subject, env.time, env.key))  # type: ignore[attr-defined]
    return head.encode() + b"\n" + env.data  # type: ignore[attr-defined]


def key_owner(kid: str) -> str:
    return kid.split("#", 1)[0]


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64: what the consortium file and Organization carry."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ConfigError(f"not a base64 Ed25519 public key: {text[:16]}...") from exc


class Signer:
    """Signs envelopes with one private key under one key id."""

    __slots__ = ("_key", "created", "kid")

    def __init__(self, kid: str, key: Ed25519PrivateKey, created: datetime | None = None
                 ) -> None:
        self.kid = kid
        self._key = key
        self.created = created or datetime(2026, 1, 1, tzinfo=UTC)

    @property
    def public_key(self) -> str:
        return public_key_text(self._key)

    def sign(self, env: Envelope) -> Envelope:
        sig = base64.urlsafe_b64encode(self._key.sign(signing_input(env))).decode()
        return env.signed(f"{SCHEME};kid={self.kid};sig={sig}")

    def __repr__(self) -> str:  # never print the key
        return f"Signer(kid={self.kid!r})"


def parse_signature(value: str | None) -> tuple[str, bytes]:
    """(key id, signature bytes) from a ``ce_signature`` header; AuthError if malformed."""
    if not value:
        raise AuthError("the event is not signed (ce_signature header missing)",
                        reason="unsigned")
    parts = value.split(";")
    fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if parts[0] != SCHEME or "kid" not in fields or "sig" not in fields:
        raise AuthError(f"ce_signature must be '{SCHEME};kid=<key id>;sig=<base64url>'",
                        reason="unsigned")
    try:
        sig = base64.urlsafe_b64decode(fields["sig"])
    except ValueError as exc:
        raise AuthError("ce_signature sig is not base64url", reason="bad-signature") from exc
    return fields["kid"], sig


def signature_valid(public_key: Ed25519PublicKey, env: Addressed, sig: bytes) -> bool:
    try:
        public_key.verify(sig, signing_input(env))
    except InvalidSignature:
        return False
    return True


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PEM (PKCS#8), readable by the owner only; never overwrites an existing key file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Ed25519 private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def demo_private_key(owner: str, n: int = 1) -> Ed25519PrivateKey:
    """DEMO ONLY: a key derived from the owner's name, so the bundled demo consortium, the
    simulator and the tests agree on keys without files. Anyone can derive these keys."""
    seed = hashlib.sha256(f"hie-demo-key:{owner}#{n}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def demo_signer(owner: str, n: int = 1) -> Signer:
    return Signer(f"{owner}#{n}", demo_private_key(owner, n))


# The hub's own signer (the gateway signs with it). Process-wide, like the hub's identity:
# set once at start (and in each validation worker process) by ``use_hub_signer``.
_hub_signer: Signer | None = None


def use_hub_signer(signer: Signer) -> None:
    global _hub_signer
    _hub_signer = signer


def hub_signer() -> Signer:
    if _hub_signer is None:
        raise ConfigError("the hub's signing key is not loaded (hub.signing.use_hub_signer)")
    return _hub_signer


def hub_kid(key: Ed25519PrivateKey) -> str:
    """``hub#<n>``, n from the public key, so each hub key has its own stable id."""
    digest = hashlib.sha256(public_key_text(key).encode()).digest()
    return f"{HUB_OWNER}#{int.from_bytes(digest[:4], 'big')}"


def load_or_create_hub_key(path: Path) -> Signer:
    """The hub's key from ``path``, generated (and written, mode 0600) on first start."""
    path = Path(path)
    if not path.exists():
        # Another replica may write it first: then use theirs.
        with contextlib.suppress(FileExistsError):
            write_private_key(path, generate_key())
    key = read_private_key(path)
    # The key file's age is the key's: stable across restarts, so the hub's registry entry
    # does not look changed each time the hub starts.
    created = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
    return Signer(hub_kid(key), key, created)
