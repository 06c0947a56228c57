"""FHIR JSON (one resource or a Bundle) and ndjson exports, checked resource by resource.

The hub would refuse an invalid resource anyway (dead-lettered at the ingest stage); here
the facility learns it before sending, with the line (ndjson) or Bundle entry and the
element, the way the lab CSV's rows are reported. What is published is the resource as
written in the file, numbers included (``1.00`` stays ``1.00``: ``hub.exactjson``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from adapters.filepublish.mapping import Mapped, MappingError, RowError
from hub.envelope import SUBJECT_PATTERN
from hub.exactjson import BOM, loads_exact, needs_exact
from hub.fhir import validate

NDJSON = (".ndjson", ".jsonl")


def read_fhir(path: Path) -> Iterator[Mapped | RowError]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix.lower() in NDJSON:
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield RowError(str(path), n, "(line)", _clip(line), f"not JSON: {exc}")
                continue
            yield from _one(path, n, doc, exact=_exact(line, doc))
        return
    raw = raw.removeprefix(BOM)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        yield RowError(str(path), 1, "(file)", "", f"not JSON: {exc}")
        return
    exact = _exact(raw, doc)
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        yield from _bundle(path, doc, exact)
    else:
        yield from _one(path, 1, doc, exact=exact)


def _exact(raw: bytes, doc: Any) -> Any:
    """``doc`` with its numbers as written, where orjson would change one; else None."""
    return loads_exact(raw) if needs_exact(raw, doc) else None


def _bundle(path: Path, bundle: dict[str, Any], exact: dict[str, Any] | None = None
            ) -> Iterator[Mapped | RowError]:
    """A Bundle's entries, numbered from 1. A transaction is all or nothing, as at the
    gateway: one bad entry and none is published."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not entries:
        yield RowError(str(path), 1, "Bundle.entry", "", "the Bundle has no entries")
        return
    out: list[Mapped | RowError] = []
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            out.append(RowError(str(path), n, f"Bundle.entry[{n - 1}].resource", "",
                                "the entry has no resource"))
            continue
        method = ((entry.get("request") or {}).get("method") or "PUT").upper()
        if method not in ("PUT", "POST"):
            out.append(RowError(str(path), n, f"Bundle.entry[{n - 1}].request.method", method,
                                "only PUT/POST entries are published from files; delete "
                                "through the hub's HTTP API"))
            continue
        out += _one(path, n, entry["resource"], f"Bundle.entry[{n - 1}].resource.",
                    exact["entry"][n - 1]["resource"] if exact is not None else None)
    if bundle.get("type") == "transaction" and any(isinstance(o, RowError) for o in out):
        bad = {o.row for o in out if isinstance(o, RowError)}
        out = [o if isinstance(o, RowError) else RowError(
            str(path), o.row, "Bundle.type", "transaction",
            f"not published: entries {', '.join(map(str, sorted(bad)))} are invalid and a "
            "transaction Bundle is all or nothing") for o in out]
    yield from out


def _one(path: Path, n: int, res: Any, prefix: str = "", exact: Any = None
         ) -> list[Mapped | RowError]:
    """The resource (``exact``, its numbers as written, where given), or one error per
    problem (each element named)."""
    issues = validate(res)
    if issues:
        return [RowError(str(path), n, prefix + i.location, "", i.diagnostics)
                for i in issues]
    rid = str(res.get("id") or "")
    if not SUBJECT_PATTERN.match(f"{res['resourceType']}/{rid}"):
        return [RowError(str(path), n, f"{prefix}{res['resourceType']}.id", rid,
                         "the resource needs an id (letters, digits, - and ., at most 64): "
                         "the hub keys resources by the facility's own id")]
    return [Mapped(n, [res if exact is None else exact])]


def _clip(line: bytes) -> str:
    text = line.decode(errors="replace")
    return text if len(text) <= 60 else text[:57] + "..."
