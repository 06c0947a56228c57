"""Dead letters for consortium operators: what was refused, why, and the original bytes.

* ``GET /deadletters?reason=&facility=&entry=&since=&until=&event_id=&_count=&_offset=``
  — newest first, without bodies (``reason``, ``facility`` and ``entry`` take ``a,b``).
* ``GET /deadletters/{id}`` — one letter with its headers, key and OperationOutcome.
* ``GET /deadletters/{id}/original`` — the input exactly as it arrived.

Who sees which letters: :func:`hub.access.rules.dead_letter_facilities`. Letters hold raw
input, so reading one about a known patient leaves an AuditEvent like any read of patient
data (refused reads too, with outcome 4).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from hub.access.rules import Principal, dead_letter_facilities
from hub.api.deps import ContextDep, HubContext, ReaderDep
from hub.api.guard import audit as _audit
from hub.api.outcome import FhirResponse, error
from hub.deadletters.letter import headers_json, jsonable
from hub.deadletters.read import StoredLetter, count, get_dead_letter, make_filter, search

router = APIRouter(prefix="/deadletters", tags=["dead letters"])
MAX_COUNT = 500
MAX_OFFSET = 1_000_000
KNOWN = {"reason", "facility", "entry", "since", "until", "event_id", "_count", "_offset",
         "_format"}
Text = Annotated[str | None, Query(max_length=500)]
LetterId = Annotated[str, Path(max_length=64)]


def _forbidden(reader: Principal, what: str) -> FhirResponse:
    return error(403, f"{reader.kind} {reader.id} may not read {what}", "forbidden")


def _public(r: StoredLetter, base: str) -> dict[str, Any]:
    return {"id": r.id, "refused_at": r.refused_at, "entry": r.entry, "reason": r.reason,
            "detail": r.detail, "facility": r.facility, "event_id": r.event_id,
            "resource_type": r.resource_type, "subject": r.subject,
            "patient_key": r.patient_key, "origin": r.origin, "published": r.published,
            "size": r.size, "original": f"{base}/deadletters/{r.id}/original"}


@router.get("")
@router.get("/", include_in_schema=False)
def list_letters(
    request: Request, ctx: ContextDep, reader: ReaderDep,
    reason: Text = None, facility: Text = None, entry: Text = None, since: Text = None,
    until: Text = None, event_id: Text = None,
    limit: Annotated[int, Query(alias="_count", ge=0, le=MAX_COUNT)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=MAX_OFFSET)] = 0,
) -> FhirResponse:
    """Dead letters matching every given filter, newest first."""
    unknown = sorted(set(request.query_params) - KNOWN)
    if unknown:
        return error(400, f"unsupported parameter(s): {', '.join(unknown)}; this endpoint "
                     f"supports {', '.join(sorted(KNOWN - {'_format'}))}", "not-supported")
    visible = dead_letter_facilities(reader)
    if visible is not None and not visible:
        return _forbidden(reader, "dead letters: an app needs the 'deadletters' scope")
    try:
        f = make_filter(reason, facility, entry, since, until, event_id, visible)
    except ValueError as exc:
        return error(400, str(exc), "value")
    if visible is not None and not set(f.facilities) <= visible:
        others = ", ".join(sorted(set(f.facilities) - visible))
        return _forbidden(reader, f"the dead letters of {others}")
    total = count(ctx.store, f)
    rows = search(ctx.store, f, limit, offset)
    patients = {r.patient_key for r in rows if r.patient_key}
    if patients:
        _audit(ctx, reader, "search-type", f"/deadletters?{request.url.query}", patients)
    base = str(request.base_url).rstrip("/")
    return FhirResponse({"total": total, "count": len(rows),
                         "deadletters": [_public(r, base) for r in rows]})


def _letter(ctx: HubContext, reader: Principal, letter_id: str, what: str
            ) -> StoredLetter | FhirResponse:
    """The letter if ``reader`` may see it; reading one about a known patient is audited
    under ``what`` (the path read), allowed or not."""
    found = get_dead_letter(ctx.store, letter_id)
    if found is None:
        return error(404, f"no dead letter {letter_id}", "not-found")
    visible = dead_letter_facilities(reader)
    allowed = visible is None or found.facility in visible
    if found.patient_key:
        _audit(ctx, reader, "read", what, {found.patient_key}, "0" if allowed else "4")
    if not allowed:
        sender = found.facility or "an unknown sender"
        return _forbidden(reader, f"dead letter {letter_id} (from {sender})")
    return found


@router.get("/{letter_id}")
def read_letter(letter_id: LetterId, request: Request, ctx: ContextDep, reader: ReaderDep
                ) -> FhirResponse:
    """One dead letter: why it was refused, its headers, key and OperationOutcome."""
    found = _letter(ctx, reader, letter_id, f"/deadletters/{letter_id}")
    if isinstance(found, FhirResponse):
        return found
    body = _public(found, str(request.base_url).rstrip("/"))
    body |= {"outcome": found.outcome, "key": jsonable(found.key),
             "headers": orjson.loads(headers_json(found.headers))}
    return FhirResponse(body)


@router.get("/{letter_id}/original")
def original(letter_id: LetterId, ctx: ContextDep, reader: ReaderDep) -> Response:
    """The refused input, byte for byte."""
    found = _letter(ctx, reader, letter_id, f"/deadletters/{letter_id}/original")
    if isinstance(found, FhirResponse):
        return found
    # Served as opaque bytes: whatever was refused must not be taken for a page or a script.
    return Response(found.original or b"", media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{letter_id}"',
                             "X-Content-Type-Options": "nosniff"})
