"""Ed25519 signatures over events: who published what.

A facility signs with its private key, which never leaves the facility; the registry holds
only its public keys, so the hub cannot forge a facility's event. The HTTP gateway cannot
sign with the facility's key, so it signs with the hub's own key: that signature says "the
hub authenticated this facility's credential and accepted this event for it".

Two header forms, both accepted everywhere:

* one event: ``ed25519;kid=<key id>;sig=<base64url>``, a signature over the event's
  ``signing_input``;
* one event of a signed batch: ``ed25519-batch;kid=<key id>;n=<events>;i=<index>;
  path=<base64url>;sig=<base64url>``. A publisher with many events at once (the SDK's
  ``publish_many``, the gateway's Bundles) signs one *manifest* instead of each event: the
  list of the events' SHA-256 digests of their signing inputs (each input names its event
  id), folded into a Merkle tree whose root is what the key signs. Each event carries its
  place in the manifest and the sibling digests on its way to the root (``path``, 32 bytes a
  level: 7 levels for 100 events), so it stays checkable on its own, later, without the
  rest of the batch: hash it, climb to the root, check the one signature. A verifier checks
  each distinct manifest signature once and every member only against its digest. A
  tampered member climbs to a root nobody signed and is refused alone.

The key id is ``<owner>#<n>`` (owner = facility id, or ``hub``) so a verifier knows which key
to use, and old events stay verifiable after a rotation because the registry keeps retired
keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub import clock
from hub.envelope import HUB_ID, Addressed, Envelope
from hub.errors import AuthError, ConfigError

SCHEME = "ed25519"
BATCH_SCHEME = "ed25519-batch"
HUB_OWNER = HUB_ID
MAX_BATCH = 4096  # events under one manifest signature: a path of at most 12 digests
_LEAF, _NODE = b"\x00", b"\x01"  # domain separation: a node can never pass for an event
_MANIFEST = b"hie-manifest-v1\n"  # nor a manifest signature for an event's (or back)


def signing_input(env: Addressed) -> bytes:
    """The bytes a signature covers: every attribute that routes or identifies the event."""
    head = "\n".join((env.id, env.source, env.type, env.subject, env.time, env.key))  # type: ignore[attr-defined]
    return head.encode() + b"\n" + env.data  # type: ignore[attr-defined]


def event_digest(env: Addressed) -> bytes:
    """SHA-256 of the event's signing input: its entry in a batch manifest."""
    return hashlib.sha256(signing_input(env)).digest()


def _leaf(digest: bytes) -> bytes:
    return hashlib.sha256(_LEAF + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def manifest_tree(digests: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """(root, each member's path): the Merkle tree over the manifest's digests.

    A level with an odd count lifts its last node unchanged to the next level (no
    duplication, so no two manifests share a root by repeating a member)."""
    level = [_leaf(d) for d in digests]
    paths: list[list[bytes]] = [[] for _ in digests]
    positions = list(range(len(digests)))  # each member's node index on the current level
    while len(level) > 1:
        for member, pos in enumerate(positions):
            sibling = pos ^ 1
            if sibling < len(level):
                paths[member].append(level[sibling])
        level = [_node(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
        positions = [p // 2 for p in positions]
    return level[0], paths


def manifest_root(digest: bytes, index: int, count: int, path: bytes) -> bytes | None:
    """The root a member's digest climbs to along ``path``; None if the path has the wrong
    length for its place in a manifest of ``count`` members."""
    node, pos, size, at = _leaf(digest), index, count, 0
    while size > 1:
        sibling = pos ^ 1
        if sibling < size:
            step = path[at:at + 32]
            if len(step) != 32:
                return None
            node = _node(step, node) if pos & 1 else _node(node, step)
            at += 32
        pos, size = pos // 2, (size + 1) // 2
    return node if at == len(path) else None


def manifest_message(count: int, root: bytes) -> bytes:
    """What a batch signature covers: the manifest's size and Merkle root."""
    return _MANIFEST + str(count).encode() + b"\n" + root


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """base64url without padding; ValueError if it is not (binascii directly: a path is
    decoded for every batch member, and base64's own wrappers cost more than the work)."""
    padded = text + "=" * (-len(text) % 4)
    return binascii.a2b_base64(padded.replace("-", "+").replace("_", "/"), strict_mode=True)


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

    def sign_batch(self, envs: list[Envelope]) -> list[Envelope]:
        """``envs`` signed by one manifest signature per ``MAX_BATCH`` events (a lone event
        gets the one-event form: the same cost, a shorter header)."""
        out: list[Envelope] = []
        for start in range(0, len(envs), MAX_BATCH):
            chunk = envs[start:start + MAX_BATCH]
            if len(chunk) == 1:
                out.append(self.sign(chunk[0]))
                continue
            root, paths = manifest_tree([event_digest(e) for e in chunk])
            n = len(chunk)
            head = f"{BATCH_SCHEME};kid={self.kid};n={n};i="
            sig = _b64(self._key.sign(manifest_message(n, root)))
            out.extend(e.signed(f"{head}{i};path={_b64(b''.join(path))};sig={sig}")
                       for i, (e, path) in enumerate(zip(chunk, paths, strict=True)))
        return out

    def __repr__(self) -> str:  # never print the key
        return f"Signer(kid={self.kid!r})"


class Signature(NamedTuple):  # a tuple: built for every event checked, at a third the cost
    """A parsed ``ce_signature``: ``count`` 0 for the one-event form, else the member
    ``index`` of a manifest of ``count`` events and its Merkle ``path``."""

    kid: str
    sig: bytes
    count: int = 0
    index: int = 0
    path: bytes = b""

    def message(self, env: Addressed) -> bytes | None:
        """The bytes ``sig`` must sign for ``env`` (None: the path cannot be this event's)."""
        if not self.count:
            return signing_input(env)
        root = manifest_root(event_digest(env), self.index, self.count, self.path)
        return None if root is None else manifest_message(self.count, root)


_FORMS = (f"'{SCHEME};kid=<key id>;sig=<base64url>' or '{BATCH_SCHEME};kid=<key id>;"
          "n=<events>;i=<index>;path=<base64url>;sig=<base64url>'")


# A manifest's signature text -> its bytes: every member of a batch carries the same one.
_DECODED: dict[str, bytes] = {}
_DECODED_MAX = 4096


def parse_signature(value: str | None) -> Signature:
    """A ``ce_signature`` header, either form; AuthError (``unsigned``) if malformed."""
    if not value:
        raise AuthError("the event is not signed (ce_signature header missing)",
                        reason="unsigned")
    scheme, _, rest = value.partition(";")
    fields: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, text = part.partition("=")
        if eq:
            fields[name] = text
    batch = scheme == BATCH_SCHEME
    try:
        kid, sig_text = fields["kid"], fields["sig"]
        if batch:
            n, i, path_text = fields["n"], fields["i"], fields["path"]
    except KeyError:
        raise AuthError(f"ce_signature must be {_FORMS}", reason="unsigned") from None
    if not batch and scheme != SCHEME:
        raise AuthError(f"ce_signature must be {_FORMS}", reason="unsigned")
    sig = _DECODED.get(sig_text)
    if sig is None:
        try:
            sig = _unb64(sig_text)
        except ValueError as exc:
            raise AuthError("ce_signature sig is not base64url",
                            reason="bad-signature") from exc
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[sig_text] = sig
    if not batch:
        return Signature(kid, sig)
    try:
        count, index = int(n), int(i)
        path = _unb64(path_text)
    except ValueError as exc:
        raise AuthError(f"ce_signature must be {_FORMS}", reason="unsigned") from exc
    if not (2 <= count <= MAX_BATCH and 0 <= index < count):
        raise AuthError(f"ce_signature: member {index} of {count} is not a place in a "
                        f"manifest of 2 to {MAX_BATCH} events", reason="unsigned")
    return Signature(kid, sig, count, index, path)


# (level, position) -> a node of one manifest's tree, and the siblings on its way to the
# root (concatenated, as a member's path holds them)
Nodes = dict[tuple[int, int], tuple[bytes, bytes]]


class Verifier:
    """Checks signatures, each distinct manifest signature once.

    For a manifest whose signature checked out, the tree nodes its members' climbs passed
    through (and their siblings, which the climbs proved) are remembered. A later member
    climbs only until it meets a remembered node (usually a level or two: its neighbour
    climbed before it), and the rest of its path must then be exactly the remembered
    siblings: the same answer the full climb to the signed root gives, for less hashing.

    Only successes are remembered, keyed by the key id, the manifest size and the
    signature, so a remembered answer is exactly the answer Ed25519 would give again.
    Whether the key was current at the event's time is the caller's question, asked every
    time."""

    # Nodes remembered across all manifests before they are forgotten (~300 bytes each
    # with the path above them): manifests arrive together, so those of a few batches back
    # are done with.
    MAX_NODES = 1 << 16

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._checked: dict[tuple[str, int, bytes], Nodes] = {}
        self._nodes = 0

    def valid(self, public_key: Ed25519PublicKey, env: Addressed, signature: Signature
              ) -> bool:
        if not signature.count:
            return _verify(public_key, signature.sig, signing_input(env))
        seen = (signature.kid, signature.count, signature.sig)
        known = self._checked.get(seen)
        proved: Nodes = {}
        root = _climb(event_digest(env), signature, known or {}, proved)
        if root is None:
            return False
        if known is not None:
            if known[_root_place(signature.count)][0] != root:
                return False
        elif _verify(public_key, signature.sig, manifest_message(signature.count, root)):
            if len(self._checked) >= self._size or self._nodes >= self.MAX_NODES:
                self._checked.clear()
                self._nodes = 0
            known = self._checked[seen] = {}
        else:
            return False
        before = len(known)
        known.update(proved)
        self._nodes += len(known) - before
        return True


def _root_place(count: int) -> tuple[int, int]:
    """Where a manifest of ``count`` members keeps its root: (levels, 0)."""
    return (count - 1).bit_length(), 0


def _climb(digest: bytes, signature: Signature, known: Nodes, proved: Nodes) -> bytes | None:
    """The root a member's digest climbs to (``manifest_root``), noting in ``proved`` each
    node passed and each sibling, with the rest of the path above it. Once the climb meets
    a node the tree is ``known`` to hold, it stops hashing: the rest of its path must be
    the rest known for that node, and the known root is the answer. None when the path has
    the wrong length or disagrees with ``known``."""
    node, pos, size, at, level = _leaf(digest), signature.index, signature.count, 0, 0
    path = signature.path
    while size > 1:
        seen = known.get((level, pos))
        if seen is not None and seen[0] == node:
            if path[at:] != seen[1]:
                return None
            return known[_root_place(signature.count)][0]
        proved[level, pos] = (node, path[at:])
        sibling = pos ^ 1
        if sibling < size:
            step = path[at:at + 32]
            if len(step) != 32:
                return None
            proved[level, sibling] = (step, node + path[at + 32:])
            node = _node(step, node) if pos & 1 else _node(node, step)
            at += 32
        pos, size, level = pos // 2, (size + 1) // 2, level + 1
    if at != len(path):
        return None
    proved[level, 0] = (node, b"")
    return node


def _verify(public_key: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    try:
        public_key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def signature_valid(public_key: Ed25519PublicKey, env: Addressed, sig: bytes | Signature
                    ) -> bool:
    """One check, nothing remembered (``Verifier`` remembers manifests)."""
    parsed = sig if isinstance(sig, Signature) else Signature("", sig)
    message = parsed.message(env)
    return message is not None and _verify(public_key, parsed.sig, message)


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
    # does not look changed each time the hub starts. The file's time is the machine's; the
    # hub's clock may be shifted (HUB_CLOCK_OFFSET: a training hub, a test on another date),
    # and events it signs carry that clock's time, so the key's creation is read on it too
    # (in whole seconds, the same on every start). On the machine's clock, events signed
    # right after the shift would predate their own key.
    shift = round((clock.now() - datetime.now(UTC)).total_seconds())
    created = datetime.fromtimestamp(int(path.stat().st_mtime) + shift, UTC)
    return Signer(hub_kid(key), key, created)
