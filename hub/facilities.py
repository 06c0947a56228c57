"""Who may publish: the consortium's member facilities and their credentials.

A minimal registry read from a YAML file (``schemas/consortium.schema.json``). Each facility
has a secret that is both its gateway bearer token and the HMAC key that signs envelopes it
writes straight to ``hie.inbound.v1``. The HTTP gateway signs for the facility it
authenticated, so every event in the log carries a verifiable signature.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from hub.access.rules import ALL, Principal
from hub.envelope import FACILITY_ID, Envelope
from hub.errors import AuthError, ConfigError

TIERS = (
    "village-clinic", "township-centre", "community-centre", "county-hospital", "city-hospital",
)
SIGNATURE_SCHEME = "hmac-sha256="
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "consortium.schema.json"


@dataclass(frozen=True, slots=True)
class Facility:
    id: str
    name: str
    tier: str
    secret: str
    group: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Facility(id={self.id!r}, name={self.name!r}, tier={self.tier!r})"


def signing_input(env: Envelope) -> bytes:
    """The bytes a signature covers: every attribute that routes or identifies the event."""
    head = "\n".join((env.id, env.source, env.type, env.subject, env.time, env.key))
    return head.encode() + b"\n" + env.data


def sign(env: Envelope, secret: str) -> Envelope:
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new per event.
    mac = hmac.digest(secret.encode(), signing_input(env), "sha256").hex()
    return env.signed(SIGNATURE_SCHEME + mac)


@dataclass(frozen=True, slots=True)
class App:
    """A downstream application with a scoped read token."""

    id: str
    name: str
    token: str
    projections: frozenset[str]
    facilities: frozenset[str]

    def __repr__(self) -> str:  # never print the token
        return f"App(id={self.id!r}, name={self.name!r})"


class FacilityDirectory:
    """Facilities and apps by id and by credential. Lookups hash the token first, so
    they take the same time whatever the token."""

    def __init__(self, facilities: list[Facility], consortium: str = "consortium",
                 apps: list[App] | None = None) -> None:
        self.consortium = consortium
        self._by_id = {f.id: f for f in facilities}
        self._by_token = {hashlib.sha256(f.secret.encode()).digest(): f for f in facilities}
        self.apps = {a.id: a for a in apps or []}
        self._apps_by_token = {hashlib.sha256(a.token.encode()).digest(): a
                               for a in apps or []}

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

    def authenticate(self, token: str | None) -> Facility:
        """Facility owning this bearer token, or AuthError."""
        if not token:
            raise AuthError("no credential: send 'Authorization: Bearer <facility token>'")
        found = self._by_token.get(hashlib.sha256(token.encode()).digest())
        if found is None:
            raise AuthError("unknown facility credential")
        return found

    def reader(self, token: str | None) -> Principal:
        """Who is reading: a member facility (sees every member's patients, as the
        consortium shares records) or an app limited to its scopes. AuthError if neither."""
        if not token:
            raise AuthError("no credential: send 'Authorization: Bearer <token>'")
        digest = hashlib.sha256(token.encode()).digest()
        app = self._apps_by_token.get(digest)
        if app is not None:
            return Principal("app", app.id, app.facilities, app.projections)
        facility = self._by_token.get(digest)
        if facility is None:
            raise AuthError("unknown credential")
        return Principal("facility", facility.id, frozenset({ALL}), frozenset({ALL}))

    def verify(self, env: Envelope) -> Facility:
        """The facility that signed ``env``; AuthError if unknown, unsigned or forged."""
        facility = self._by_id.get(env.facility_id)
        if facility is None:
            raise AuthError(f"unknown facility {env.facility_id!r} in ce_source")
        if not env.signature or not env.signature.startswith(SIGNATURE_SCHEME):
            raise AuthError(f"event {env.id} is not signed (ce_signature {SIGNATURE_SCHEME}...)")
        expected = sign(env, facility.secret).signature or ""
        if not hmac.compare_digest(expected, env.signature):
            raise AuthError(f"bad signature on event {env.id} for facility {facility.id}")
        return facility


def load_directory(path: Path | None) -> FacilityDirectory:
    """Read and check a consortium file; the bundled demo consortium when ``path`` is None."""
    if path is None:
        text = resources.files("hub.data").joinpath("demo-consortium.yaml").read_text("utf-8")
        origin = "bundled demo-consortium.yaml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read facilities file {path}: {exc}") from exc
        origin = str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {exc}") from exc
    schema = yaml.safe_load(SCHEMA_PATH.read_text("utf-8")) if SCHEMA_PATH.exists() else None
    if schema is not None:
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ConfigError(f"{origin}: {where}: {exc.message}") from exc
    facilities = []
    for item in doc.get("facilities", []):
        if not FACILITY_ID.match(item["id"]) or item["tier"] not in TIERS:
            raise ConfigError(f"{origin}: facility {item.get('id')!r} has a bad id or tier")
        facilities.append(
            Facility(item["id"], item["name"], item["tier"], item["secret"], item.get("group"))
        )
    if len({f.id for f in facilities}) != len(facilities):
        raise ConfigError(f"{origin}: facility ids must be unique")
    apps = [App(a["id"], a["name"], a["token"], frozenset(a["projections"]),
                frozenset(a["facilities"])) for a in doc.get("apps", [])]
    unknown = {f for a in apps for f in a.facilities} - {f.id for f in facilities} - {ALL}
    if unknown:
        raise ConfigError(f"{origin}: apps name unknown facilities: {sorted(unknown)}")
    return FacilityDirectory(facilities, doc.get("consortium", "consortium"), apps)
