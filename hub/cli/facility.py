"""``hub facility ...``: edit the consortium file, and ask the registry in the log.

Edits go to the consortium file; the running hub notices within
``HUB_REGISTRY_POLL_SECONDS`` and publishes each change as an Organization event (a hub that
is not running publishes it when it starts). Questions "as of" a moment are answered from
the registry projection, i.e. from the log.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.table import Table

from hub import clock
from hub.cli.common import DataOpt, DbOpt, console, existing_store, fail, hub_command, settings
from hub.errors import ConfigError
from hub.facilities import Facility
from hub.registry import read
from hub.registry.consortium_file import (
    BUNDLED,
    Consortium,
    parse_consortium,
    read_consortium,
    to_document,
    write_consortium,
)
from hub.registry.model import SERVICES, TIERS, FacilityRecord, Qualification, SigningKey
from hub.signing import generate_key, load_public_key, public_key_text, write_private_key
from hub.store.db import Store

SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")  # as schemas/consortium.schema.json says

facility_app = typer.Typer(help="The consortium registry: member facilities, their tier, "
                           "reading centres, EQA passes and signing keys.",
                           no_args_is_help=True)

FileOpt = Annotated[Path | None, typer.Option(
    "--facilities", envvar="HUB_FACILITIES_FILE",
    help="Consortium YAML to read or edit. Default for reading: the bundled demo consortium.")]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="Answer from the log: the registry as of this RFC 3339 time "
    "(e.g. 2026-11-01T00:00:00Z), or 'now' for the latest the hub has published.")]
PublicKeyOpt = Annotated[str | None, typer.Option(
    "--public-key", help="The facility's Ed25519 public key (raw, base64), if it made its "
    "own key pair. Otherwise a pair is generated and the private key written to --key-out.")]
KeyOutOpt = Annotated[Path | None, typer.Option(
    "--key-out", help="Where to write a generated private key (PEM, mode 0600). Default: "
    "keys/<kid>.pem beside the consortium file. Hand it to the facility; keep no copy.")]


def _editable(path: Path | None) -> tuple[Path, Consortium]:
    if path is None:
        raise ConfigError(
            f"no consortium file to edit (the bundled {BUNDLED} is read-only): pass "
            f"--facilities FILE or set HUB_FACILITIES_FILE; `{hub_command()} facility init "
            "FILE` starts one")
    return path, read_consortium(path)


def _save(path: Path, c: Consortium, what: str, new_key: Path | None = None) -> None:
    """Write the file; a private key written for this change goes if the file cannot be."""
    try:
        write_consortium(c, path)
    except BaseException:
        if new_key is not None:
            new_key.unlink(missing_ok=True)
        raise
    console.print(f"[green]{what}[/green] in {path}. A running hub publishes it as an "
                  "Organization event within seconds; a stopped hub does so when it starts.")


def _key_pair(public_key: str | None) -> tuple[str, Ed25519PrivateKey | None]:
    """The public key to register: the one given, or a fresh pair's (the private half is
    written only once the whole change has been checked)."""
    if public_key:
        load_public_key(public_key)
        return public_key, None
    key = generate_key()
    return public_key_text(key), key


def _write_key(key: Ed25519PrivateKey | None, kid: str, key_out: Path | None,
               beside: Path) -> Path | None:
    if key is None:
        return None
    out = key_out or beside.parent / "keys" / f"{kid.replace('#', '-')}.pem"
    try:
        write_private_key(out, key)
    except FileExistsError as exc:
        raise ConfigError(f"{out} exists; choose another --key-out") from exc
    console.print(f"private key for [bold]{kid}[/bold] written to {out} (give it to the "
                  "facility's integrator, then delete this copy)")
    return out


def _checked(c: Consortium, path: Path) -> None:
    """Everything the file's schema says, before anything is written."""
    parse_consortium(to_document(c), str(path))


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a day (YYYY-MM-DD)")


def _instant(value: str) -> str:
    """``--as-of`` as the log writes times (UTC, ``...Z``), so comparing them is right."""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--as-of {value!r} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z) or 'now'")
    if at.tzinfo is None:
        fail(f"--as-of {value!r} has no time zone: add Z (UTC) or an offset such as +08:00")
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _registry_store(data_dir: Path | None, db: str | None) -> Store:
    store = existing_store(settings(db=db, data_dir=data_dir))
    if not sa.inspect(store.engine).has_table("registry_history"):
        store.dispose()
        raise ConfigError(f"no registry in the store {store.engine.url} yet: start the hub "
                          "once (it publishes the consortium file to the log)")
    return store


def _from_log(as_of: str, data_dir: Path | None, db: str | None) -> dict[str, FacilityRecord]:
    when = None if as_of == "now" else _instant(as_of)  # check before opening anything
    store = _registry_store(data_dir, db)
    try:
        return read.current(store) if when is None else read.as_of(store, when)
    finally:
        store.dispose()


@facility_app.command("init")
def init(path: Annotated[Path, typer.Argument(help="Consortium file to create.")],
         name: Annotated[str, typer.Option(help="Consortium name.")] = "consortium",
         demo: Annotated[bool, typer.Option(
             help="Start from the demo consortium (18 facilities, DEMO keys and tokens).")
         ] = False) -> None:
    """Create a consortium file to edit with the other commands."""
    if path.exists():
        fail(f"{path} exists; not overwriting it")
    c = read_consortium(None) if demo else Consortium(name, origin=str(path))
    if not demo:
        c.name = name
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, c, f"consortium {c.name!r} created")


@facility_app.command("list")
def list_facilities(facilities: FileOpt = None, as_of: AsOfOpt = None,
                    data_dir: DataOpt = None, db: DbOpt = None) -> None:
    """Member facilities (from the file, or from the log with --as-of) and apps."""
    c = read_consortium(facilities)
    records = [f.record for f in c.facilities] if as_of is None else \
        sorted(_from_log(as_of, data_dir, db).values(), key=lambda r: r.id)
    title = c.name if as_of is None else f"{c.name} — registry in the log as of {as_of}"
    table = Table(title=title, caption=f"`{hub_command()} facility show <id>` for groups, "
                  "EQA windows and keys")
    table.add_column("id", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("imaging / ECG / pathology read at")
    table.add_column("EQA today")
    today = clock.today()
    for r in records:
        centres = " / ".join(r.reading_centre(s) or "-" for s in SERVICES)
        eqa = " ".join(sorted({q.category for q in r.eqa if q.covers(today)})) or "-"
        table.add_row(r.id, r.tier, r.name + ("" if r.active else " (left)"), centres, eqa)
    console.print(table)
    if as_of is None and c.apps:
        apps = Table(title="apps (scoped read tokens)")
        for col in ("id", "name", "projections", "patients of"):
            apps.add_column(col)
        for a in c.apps:
            apps.add_row(a.id, a.name, ", ".join(sorted(a.projections)),
                         ", ".join(sorted(a.facilities)))
        console.print(apps)


@facility_app.command("show")
def show(facility_id: str, facilities: FileOpt = None, as_of: AsOfOpt = None,
         history: Annotated[bool, typer.Option(
             help="Also list every registry change of this facility in the log.")] = False,
         data_dir: DataOpt = None, db: DbOpt = None) -> None:
    """One facility in full: reading centres, time zone, EQA windows, keys and their
    status."""
    if as_of is None:
        rec = read_consortium(facilities).get(facility_id).record
    else:
        found = _from_log(as_of, data_dir, db).get(facility_id)
        if found is None:
            raise ConfigError(f"{facility_id!r} is not in the registry as of {as_of}")
        rec = found
    # Everything that can fail before anything is printed.
    changes = None
    if history:
        store = _registry_store(data_dir, db)
        try:
            changes = read.history(store, facility_id)
        finally:
            store.dispose()
    console.print(f"[bold]{rec.id}[/bold] {rec.name} — {rec.tier}, group {rec.group or '-'}"
                  + ("" if rec.active else " [red](left the consortium)[/red]"))
    for s in SERVICES:
        console.print(f"  reads {s} at: {rec.reading_centre(s) or '-'}")
    console.print(f"  time zone: {rec.zone().key}; HL7 MSH-4 names: "
                  f"{', '.join(rec.hl7_names) or '-'}")
    console.print(f"  receives referrals for: {', '.join(rec.referrals) or '-'}")
    eqa = Table(title="EQA passes")
    for col in ("category", "valid from", "valid to", "today"):
        eqa.add_column(col)
    for q in rec.eqa:
        eqa.add_row(q.category, q.valid_from.isoformat(), q.valid_to.isoformat(),
                    "valid" if q.covers(clock.today()) else "not valid")
    console.print(eqa)
    keys = Table(title="signing keys")
    for col in ("kid", "created", "retired", "revoked", "status now"):
        keys.add_column(col)
    now = clock.now()
    for k in rec.keys:
        keys.add_row(k.kid, _t(k.created), _t(k.retired), _t(k.revoked), k.status_at(now))
    console.print(keys)
    if changes is not None:
        h = Table(title="registry changes in the log")
        for col in ("valid from", "event", "tier", "EQA", "keys"):
            h.add_column(col)
        for vf, eid, r in changes:
            h.add_row(vf, eid, r.tier, ", ".join(f"{q.category}≤{q.valid_to}" for q in r.eqa),
                      ", ".join(f"{k.kid}:{k.status_at(now)}" for k in r.keys))
        console.print(h)


def _t(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else ""


@facility_app.command("add")
def add(
    facility_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    tier: Annotated[str, typer.Option(help=f"One of: {', '.join(TIERS)}.")],
    group: Annotated[str | None, typer.Option(
        help="Medical community / medical group it belongs to.")] = None,
    imaging: Annotated[str | None, typer.Option(help="Reading centre for imaging.")] = None,
    ecg: Annotated[str | None, typer.Option(help="Reading centre for ECG.")] = None,
    pathology: Annotated[str | None, typer.Option(help="Reading centre for pathology.")
                         ] = None,
    timezone: Annotated[str | None, typer.Option(
        help="IANA time zone of its systems' clocks, if not Asia/Shanghai.")] = None,
    hl7_name: Annotated[list[str] | None, typer.Option(
        help="A name its HL7 v2 systems send in MSH-4 (repeat for several).")] = None,
    public_key: PublicKeyOpt = None, key_out: KeyOutOpt = None, facilities: FileOpt = None,
) -> None:
    """Register a member facility: a gateway token and a signing key are issued."""
    path, c = _editable(facilities)
    if any(f.id == facility_id for f in c.facilities):
        fail(f"{facility_id!r} is already registered")
    if tier not in TIERS:
        fail(f"--tier must be one of {', '.join(TIERS)}; got {tier!r}")
    centres = {s: v for s, v in (("imaging", imaging), ("ecg", ecg), ("pathology", pathology))
               if v}
    rec = FacilityRecord(facility_id, name, tier, group, tuple(sorted(centres.items())))
    pub, private = _key_pair(public_key)
    kid = rec.next_kid()
    rec = FacilityRecord(rec.id, rec.name, rec.tier, rec.group, rec.reading_centres,
                         keys=(SigningKey(kid, pub, clock.now()),), timezone=timezone,
                         hl7_names=tuple(hl7_name or ()))
    token = secrets.token_urlsafe(32)
    c.put(Facility(rec, token))
    _checked(c, path)
    _save(path, c, f"{facility_id} registered", _write_key(private, kid, key_out, path))
    console.print(f"gateway token for {facility_id} (shown once; it is also in the file): "
                  f"[bold]{token}[/bold]")


@facility_app.command("rotate-key")
def rotate_key(
    facility_id: str, public_key: PublicKeyOpt = None, key_out: KeyOutOpt = None,
    revoke: Annotated[bool, typer.Option(
        help="The old key is compromised: revoke it (events signed with it are refused from "
             "now on, whatever their timestamp) instead of retiring it.")] = False,
    facilities: FileOpt = None,
) -> None:
    """Give a facility a new signing key. The old one is retired (or revoked) now; it stays
    in the registry so events it signed before stay verifiable."""
    path, c = _editable(facilities)
    f = c.get(facility_id)
    pub, private = _key_pair(public_key)
    rec = f.record.with_rotated_key(pub, clock.now(), revoke_old=revoke)
    kid = rec.keys[-1].kid
    c.put(Facility(rec, f.token))
    _checked(c, path)
    _save(path, c, f"{facility_id} now signs with {kid}",
          _write_key(private, kid, key_out, path))


@facility_app.command("set-referrals")
def set_referrals(
    facility_id: str,
    services: Annotated[str, typer.Argument(
        help="Comma-separated services it receives referrals for (cardiology,surgery); "
             "'' for none.")],
    facilities: FileOpt = None,
) -> None:
    """Say which services a facility receives two-way referrals for (routing)."""
    names = sorted({n.strip() for n in services.split(",") if n.strip()})
    bad = [n for n in names if not SERVICE_NAME.fullmatch(n)]
    if bad:
        fail(f"service {bad[0]!r} is not a service name: lower-case letters, digits and "
             "'-', e.g. cardiology")
    path, c = _editable(facilities)
    f = c.get(facility_id)
    c.put(Facility(dataclasses.replace(f.record, referrals=tuple(names)), f.token))
    _save(path, c, f"{facility_id} receives referrals for {', '.join(names) or 'nothing'}")


@facility_app.command("set-eqa")
def set_eqa(
    facility_id: str,
    category: Annotated[str, typer.Argument(help="lab, imaging, ecg, pathology, ...")],
    valid_from: Annotated[str, typer.Option("--from", help="First valid day, YYYY-MM-DD.")],
    valid_to: Annotated[str, typer.Option("--to", help="Last valid day (inclusive).")],
    facilities: FileOpt = None,
) -> None:
    """Record an EQA (external quality assessment) pass for one test category. To record a
    lapse, set --to to the last day it was valid."""
    first, last = _day("--from", valid_from), _day("--to", valid_to)
    if last < first:
        fail("--to is before --from")
    path, c = _editable(facilities)
    f = c.get(facility_id)
    c.put(Facility(f.record.with_eqa(Qualification(category, first, last)), f.token))
    _save(path, c, f"{facility_id} EQA {category} valid {valid_from}..{valid_to}")
