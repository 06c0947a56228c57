"""The consortium file: the operator's statement of who the members are.

YAML, checked against ``schemas/consortium.schema.json``. ``hub facility`` commands edit it
(rewriting it whole: comments are not kept), and the running hub turns every difference
between it and the registry in the log into an Organization event (``hub.registry.sync``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

from hub import clock
from hub.access.rules import ALL
from hub.envelope import FACILITY_ID
from hub.errors import ConfigError
from hub.facilities import App, Facility, FacilityDirectory
from hub.fhir import unstorable_text
from hub.registry import care as care_file
from hub.registry.care import CareRegistry
from hub.registry.model import FacilityRecord, Qualification, SigningKey
from hub.schemas import schema_file
from hub.signing import HUB_OWNER, load_public_key

BUNDLED = "demo-consortium.yaml"
# The bundled demo consortium is written as if it were July 2026. Its dates (EQA windows,
# key creation) move with the clock by whole months, so a demo or a test run on any day sees
# the same story: passes valid for six months either side, township-4's lapsed half a year ago.
DEMO_WRITTEN_FOR = (2026, 7)


@dataclass
class Consortium:
    name: str
    facilities: list[Facility] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    origin: str = ""
    care: CareRegistry = field(default_factory=CareRegistry)  # teams, residents, devices

    def directory(self, hub: FacilityRecord | None = None) -> FacilityDirectory:
        return FacilityDirectory(self.facilities, self.name, self.apps, hub)

    def get(self, facility_id: str) -> Facility:
        for f in self.facilities:
            if f.id == facility_id:
                return f
        raise ConfigError(f"no facility {facility_id!r} in {self.origin}; "
                          f"known: {', '.join(f.id for f in self.facilities)}")

    def put(self, facility: Facility) -> None:
        """Add ``facility`` or replace the one with its id (in place); ConfigError, and no
        change, if the result would be inconsistent."""
        ids = [f.id for f in self.facilities]
        facilities = list(self.facilities)
        if facility.id in ids:
            facilities[ids.index(facility.id)] = facility
        else:
            facilities.append(facility)
        check_references(Consortium(self.name, facilities, self.apps, self.origin, self.care))
        self.facilities = facilities


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _record(item: dict) -> FacilityRecord:
    keys = tuple(SigningKey(
        k["kid"], k["public_key"], _time(k["created"]),
        _time(k["retired"]) if k.get("retired") else None,
        _time(k["revoked"]) if k.get("revoked") else None) for k in item.get("keys", []))
    for k in keys:
        load_public_key(k.public_key)  # a typo in a key fails at load, not at first event
        if not k.kid.startswith(f"{item['id']}#"):
            raise ConfigError(f"facility {item['id']}: key id {k.kid!r} must start with "
                              f"'{item['id']}#'")
    eqa = tuple(Qualification(q["category"], _day(q["valid_from"]), _day(q["valid_to"]))
                for q in item.get("eqa", []))
    for q in eqa:
        if q.valid_to < q.valid_from:
            raise ConfigError(f"facility {item['id']}: EQA {q.category} ends before it starts")
    zone = item.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"facility {item['id']}: timezone {zone!r} is not an IANA time "
                              "zone (e.g. Asia/Shanghai)") from exc
    return FacilityRecord(
        id=item["id"], name=item["name"], tier=item["tier"], group=item.get("group"),
        reading_centres=tuple(sorted((item.get("reading_centres") or {}).items())),
        eqa=eqa, keys=keys, active=item.get("active", True), timezone=zone,
        hl7_names=tuple(item.get("hl7_names") or ()),
        referrals=tuple(sorted(set(item.get("referrals") or ()))))


def check_references(c: Consortium) -> None:
    ids = [f.id for f in c.facilities]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{c.origin}: facility ids must be unique")
    if HUB_OWNER in ids:
        raise ConfigError(f"{c.origin}: '{HUB_OWNER}' is reserved for the hub itself")
    known = set(ids)
    for f in c.facilities:
        for service, centre in f.record.reading_centres:
            if centre not in known:
                raise ConfigError(f"{c.origin}: {f.id} reads {service} at unknown facility "
                                  f"{centre!r}")
    tokens = [f.token for f in c.facilities] + [a.token for a in c.apps]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{c.origin}: every facility and app needs its own token")
    unknown = {x for a in c.apps for x in a.facilities} - known - {ALL}
    if unknown:
        raise ConfigError(f"{c.origin}: apps name unknown facilities: {sorted(unknown)}")
    if found := care_file.problems(c.care, known):
        raise ConfigError(f"{c.origin}: {found[0]}")


def parse_consortium(doc: Any, origin: str) -> Consortium:
    schema = yaml.safe_load(schema_file("consortium.schema.json").read_text("utf-8"))
    if schema is not None:
        try:
            jsonschema.validate(_jsonable(doc), schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ConfigError(f"{origin}: {where}: {exc.message}") from exc
    # A name with NUL would be refused by every store once published as an Organization.
    if found := unstorable_text(_jsonable(doc), "consortium"):
        raise ConfigError(f"{origin}: {found[0].diagnostics}")
    facilities = []
    for item in doc.get("facilities", []):
        if not FACILITY_ID.match(item["id"]):
            raise ConfigError(f"{origin}: facility id {item.get('id')!r} is not valid")
        try:
            facilities.append(Facility(_record(item), item["token"]))
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{origin}: facility {item['id']}: {exc}") from exc
    apps = [App(a["id"], a["name"], a["token"], frozenset(a["projections"]),
                frozenset(a["facilities"])) for a in doc.get("apps", [])]
    c = Consortium(doc.get("consortium", "consortium"), facilities, apps, origin,
                   care_file.parse(doc))
    check_references(c)
    return c


def _jsonable(value: Any) -> Any:
    """YAML turns bare dates into date objects; JSON Schema wants strings."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def read_consortium(path: Path | None) -> Consortium:
    """Read and check a consortium file; the bundled demo consortium when ``path`` is None."""
    if path is None:
        text = resources.files("hub.data").joinpath(BUNDLED).read_text("utf-8")
        origin = f"bundled {BUNDLED}"
        today = clock.today()
        months = today.year * 12 + today.month - (DEMO_WRITTEN_FOR[0] * 12 + DEMO_WRITTEN_FOR[1])
        return parse_consortium(shift_dates(yaml.safe_load(text), months), origin)
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read consortium file {path}: {exc}") from exc
        origin = str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'facilities'")
    return parse_consortium(doc, origin)


def _shift_day(day: date, months: int) -> date:
    """``day`` moved by whole months; a month's last day stays its month's last day."""
    last = (day + timedelta(days=1)).month != day.month
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    length = (date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, length if last else min(day.day, length))


def shift_dates(doc: dict, months: int) -> dict:
    """The consortium document with every EQA day, key time and signing day of a resident
    moved by ``months``."""
    if not months:
        return doc
    for item in doc.get("facilities") or ():
        for q in item.get("eqa") or ():
            for k in ("valid_from", "valid_to"):
                q[k] = _shift_day(_day(q[k]), months).isoformat()
        for key in item.get("keys") or ():
            for k in ("created", "retired", "revoked"):
                if key.get(k):
                    t = _time(key[k])
                    key[k] = _iso(datetime.combine(_shift_day(t.date(), months), t.timetz()))
    for team in doc.get("teams") or ():
        for resident in team.get("residents") or ():
            resident["signed"] = _shift_day(_day(resident["signed"]), months).isoformat()
    return doc


def load_directory(path: Path | None) -> FacilityDirectory:
    """Read and check a consortium file; the bundled demo consortium when ``path`` is None."""
    return read_consortium(path).directory()


def to_document(c: Consortium) -> dict:
    out: dict[str, Any] = {"consortium": c.name, "facilities": []}
    for f in c.facilities:
        r = f.record
        item: dict[str, Any] = {"id": r.id, "name": r.name, "tier": r.tier}
        if r.group:
            item["group"] = r.group
        item["token"] = f.token
        if not r.active:
            item["active"] = False
        if r.timezone:
            item["timezone"] = r.timezone
        if r.hl7_names:
            item["hl7_names"] = list(r.hl7_names)
        if r.reading_centres:
            item["reading_centres"] = dict(r.reading_centres)
        if r.referrals:
            item["referrals"] = list(r.referrals)
        if r.eqa:
            item["eqa"] = [{"category": q.category, "valid_from": q.valid_from.isoformat(),
                            "valid_to": q.valid_to.isoformat()} for q in r.eqa]
        if r.keys:
            item["keys"] = [{k2: v for k2, v in {
                "kid": k.kid, "public_key": k.public_key, "created": _iso(k.created),
                "retired": _iso(k.retired), "revoked": _iso(k.revoked)}.items() if v}
                for k in r.keys]
        out["facilities"].append(item)
    if c.apps:
        out["apps"] = [{"id": a.id, "name": a.name, "token": a.token,
                        "projections": sorted(a.projections),
                        "facilities": sorted(a.facilities)} for a in c.apps]
    out.update(care_file.to_document(c.care))
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def write_consortium(c: Consortium, path: Path) -> None:
    """Check, then replace ``path`` atomically: a crash leaves the old file or the new one."""
    doc = to_document(c)
    parse_consortium(doc, str(path))
    text = ("# Consortium file of the health-information exchange hub "
            "(schemas/consortium.schema.json).\n# Written by `hub facility ...`; "
            "hand edits are fine, comments are not kept.\n")
    text += yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
