"""Who is who at runtime: member facilities, their credentials and keys, and apps.

Built from the consortium file (``hub.registry.consortium_file.load_directory``). A
facility has a gateway bearer token (a credential, kept out of the log) and Ed25519 public
keys (in the registry and the log). The directory verifies event signatures and
authenticates HTTP callers; it can be refreshed in place when the registry changes, so every
holder sees the new state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from hub import clock
from hub.access.rules import ALL, Principal
from hub.envelope import Addressed
from hub.errors import AuthError
from hub.registry.model import TIERS, FacilityRecord
from hub.signing import HUB_OWNER, Verifier, key_owner, load_public_key, parse_signature

__all__ = ["TIERS", "App", "Facility", "FacilityDirectory"]


@dataclass(frozen=True, slots=True)
class Facility:
    """A member facility: its registry record and its gateway token."""

    record: FacilityRecord
    token: str

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def tier(self) -> str:
        return self.record.tier

    @property
    def group(self) -> str | None:
        return self.record.group

    def __repr__(self) -> str:  # never print the token
        return f"Facility(id={self.id!r}, name={self.name!r}, tier={self.tier!r})"


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


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class FacilityDirectory:
    """Facilities and apps by id and by credential. Lookups hash the token first, so
    they take the same time whatever the token."""

    def __init__(self, facilities: list[Facility], consortium: str = "consortium",
                 apps: list[App] | None = None, hub: FacilityRecord | None = None) -> None:
        self._set(facilities, consortium, apps or [], hub)

    def _set(self, facilities: list[Facility], consortium: str, apps: list[App],
             hub: FacilityRecord | None) -> None:
        self.consortium = consortium
        self.hub = hub
        self._by_id = {f.id: f for f in facilities}
        self._by_token = {_digest(f.token): f for f in facilities}
        self.apps = {a.id: a for a in apps}
        self._apps_by_token = {_digest(a.token): a for a in apps}
        # Parsed public keys by key id: parsing costs more than verifying.
        records = [f.record for f in facilities] + ([hub] if hub else [])
        self._keys = {k.kid: (r, k, load_public_key(k.public_key))
                      for r in records for k in r.keys}
        # Manifest signatures already checked; new keys, a new memory.
        self._verifier = Verifier()

    def refresh(self, other: FacilityDirectory) -> None:
        """Take ``other``'s contents, so every holder of this object sees the change."""
        self._set(list(other), other.consortium, list(other.apps.values()), other.hub)

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, facility_id: object) -> bool:
        return facility_id in self._by_id

    def get(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

    def records(self) -> list[FacilityRecord]:
        return [f.record for f in self] + ([self.hub] if self.hub else [])

    def authenticate(self, token: str | None) -> Facility:
        """Facility owning this bearer token, or AuthError."""
        if not token:
            raise AuthError("no credential: send 'Authorization: Bearer <facility token>'")
        found = self._by_token.get(_digest(token))
        if found is None or not found.record.active:
            raise AuthError("unknown facility credential")
        return found

    def reader(self, token: str | None) -> Principal:
        """Who is reading: a member facility (sees every member's patients, as the
        consortium shares records) or an app limited to its scopes. AuthError if neither."""
        if not token:
            raise AuthError("no credential: send 'Authorization: Bearer <token>'")
        digest = _digest(token)
        app = self._apps_by_token.get(digest)
        if app is not None:
            return Principal("app", app.id, app.facilities, app.projections)
        facility = self._by_token.get(digest)
        if facility is None or not facility.record.active:
            raise AuthError("unknown credential")
        return Principal("facility", facility.id, frozenset({ALL}), frozenset({ALL}))

    def verify(self, env: Addressed, at: datetime | None = None, now: datetime | None = None,
               allow_hub: bool = False) -> str:
        """The key id that validly signed ``env``; AuthError with a reason code otherwise.

        ``at`` is when the event was published (its log timestamp): a key retired by a
        rotation still covers events published before the rotation, so events in flight
        during a rotation are not lost. A revoked key is judged at ``now`` instead: after a
        compromise, a forger could backdate timestamps. Checking an archived event, pass
        ``now=at``. ``allow_hub`` also accepts the hub's own signature (events the gateway
        accepted), which the inbound topic must never accept."""
        facility_id = env.facility_id
        if facility_id not in self._by_id and not (allow_hub and facility_id == HUB_OWNER):
            raise AuthError(f"unknown facility {facility_id!r} in ce_source",
                            reason="unknown-facility")
        member = self._by_id.get(facility_id)
        if member is not None and not member.record.active:
            raise AuthError(f"facility {facility_id!r} has left the consortium",
                            reason="inactive-facility")
        signature = parse_signature(env.signature)  # type: ignore[attr-defined]
        kid = signature.kid
        owner = key_owner(kid)
        if owner != facility_id and not (allow_hub and owner == HUB_OWNER):
            raise AuthError(f"signed with {owner!r}'s key {kid!r} but ce_source names "
                            f"{facility_id!r}: nobody speaks for another facility",
                            reason="source-mismatch")
        entry = self._keys.get(kid)
        if entry is None:
            raise AuthError(f"key {kid!r} is not in the registry", reason="unknown-key")
        _, key, public = entry
        if not self._verifier.valid(public, env, signature):
            raise AuthError(f"bad signature on event {env.id} with key {kid!r}",  # type: ignore[attr-defined]
                            reason="bad-signature")
        real_now = clock.now()
        status = key.status_at(at or real_now)
        if key.revoked is not None and (now or real_now) >= key.revoked:
            status = "revoked"
        if status != "active":
            raise AuthError(f"key {kid!r} is {status}: sign with the facility's current key",
                            reason=f"key-{status}")
        return kid
