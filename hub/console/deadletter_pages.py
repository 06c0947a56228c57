"""Dead letters: the filtered list, one letter with its OperationOutcome and original bytes,
and re-submitting a fixed body.

Visibility and auditing are the API's (hub/api/deadletters.py): reading a letter about a
known patient leaves an AuditEvent, allowed or refused. A re-submission goes through the
gateway in this process with the sending facility's own credential, so it is checked,
journaled or refused like any PUT; only the facility that sent the letter may re-submit it
(an app cannot publish), and the re-submission leaves its own AuditEvent naming the letter.
"""

from __future__ import annotations

from typing import Annotated

import httpx
import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hub.access.rules import dead_letter_facilities
from hub.api.guard import audit
from hub.console.session import Session, csrf_ok
from hub.console.web import (
    ConsoleAnswer,
    SessionDep,
    context,
    form,
    refused,
    render,
    secured,
)
from hub.deadletters.letter import headers_json
from hub.deadletters.read import StoredLetter, count, get_dead_letter, make_filter, search

router = APIRouter(prefix="/console/deadletters", include_in_schema=False)
Text = Annotated[str | None, Query(max_length=500)]
LetterId = Annotated[str, Path(max_length=64)]
PAGE = 50
RESUBMITTABLE = "gateway"  # a Kafka record's letter needs the facility's signing key


@router.get("")
async def letters(request: Request, session: SessionDep, reason: Text = None,
                  facility: Text = None, since: Text = None, until: Text = None,
                  event_id: Text = None,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    ctx = context(request)
    who = session.principal
    visible = dead_letter_facilities(who)
    if visible is not None and not visible:
        return refused(request, session, f"{who.kind} {who.id} may not read dead letters: an "
                       "app needs the 'deadletters' scope")
    filters = {"reason": reason or "", "facility": facility or "", "since": since or "",
               "until": until or "", "event_id": event_id or ""}
    try:
        f = make_filter(reason or None, facility or None, None, since or None, until or None,
                        event_id or None, visible)
    except ValueError as exc:
        return render(request, session, "deadletters.html", status=400, error=str(exc),
                      filters=filters, rows=[], total=0, offset=0, page=PAGE)
    if visible is not None and not set(f.facilities) <= visible:
        others = ", ".join(sorted(set(f.facilities) - visible))
        return refused(request, session, f"{who.kind} {who.id} may not read the dead "
                       f"letters of {others}")
    total = await run_in_threadpool(count, ctx.store, f)
    rows = await run_in_threadpool(search, ctx.store, f, PAGE, offset)
    patients = {r.patient_key for r in rows if r.patient_key}
    if patients:
        await run_in_threadpool(audit, ctx, who, "search-type",
                                f"console/deadletters?{request.url.query}", patients)
    return render(request, session, "deadletters.html", filters=filters, rows=rows,
                  total=total, offset=offset, page=PAGE, error=None)


async def _letter(request: Request, session: Session, letter_id: str, what: str
                  ) -> StoredLetter:
    """The letter if the login may see it (else ConsoleAnswer); reading one about a known
    patient is audited under ``what``, allowed or not."""
    ctx = context(request)
    found = await run_in_threadpool(get_dead_letter, ctx.store, letter_id)
    if found is None:
        raise ConsoleAnswer(render(request, session, "refused.html", status=404,
                                   message=f"No dead letter {letter_id}."))
    visible = dead_letter_facilities(session.principal)
    allowed = visible is None or found.facility in visible
    if found.patient_key:
        await run_in_threadpool(audit, ctx, session.principal, "read", what,
                                {found.patient_key}, "0" if allowed else "4")
    if not allowed:
        raise ConsoleAnswer(refused(request, session, f"{session.principal.kind} "
                                    f"{session.principal.id} may not read dead letter "
                                    f"{letter_id} (from "
                                    f"{found.facility or 'an unknown sender'})"))
    return found


def _may_resubmit(session: Session, letter: StoredLetter) -> bool:
    return (session.principal.kind == "facility" and letter.entry == RESUBMITTABLE
            and letter.facility == session.principal.id)


@router.get("/{letter_id}")
async def letter(request: Request, session: SessionDep, letter_id: LetterId) -> Response:
    found = await _letter(request, session, letter_id, f"/deadletters/{letter_id}")
    return _show(request, session, found, (found.original or b"").decode("utf-8", "replace"))


def _show(request: Request, session: Session, found: StoredLetter, text: str,
          result: dict | None = None, status: int = 200) -> Response:
    return render(request, session, "deadletter.html", status=status, letter=found, text=text,
                  outcome=orjson.dumps(found.outcome, option=orjson.OPT_INDENT_2).decode()
                  if found.outcome else "",
                  headers=_headers(found), may_resubmit=_may_resubmit(session, found),
                  result=result)


def _headers(found: StoredLetter) -> str:
    return headers_json(found.headers) if found.headers else ""


@router.get("/{letter_id}/original")
async def original(request: Request, session: SessionDep, letter_id: LetterId
                   ) -> Response:
    found = await _letter(request, session, letter_id, f"/deadletters/{letter_id}/original")
    # Opaque bytes: whatever was refused must not be taken for a page or a script.
    return secured(Response(found.original or b"", media_type="application/octet-stream",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{letter_id}.json"'}))


def _target(letter: StoredLetter, body: object) -> tuple[str, str]:
    """Where the fixed body goes: the request the letter came in (its ``http_request``
    header), else by what the body is: a Bundle to ``POST /fhir``, a resource with an id to
    ``PUT /fhir/<type>/<id>``, one without to ``POST /fhir/<type>``."""
    for name, value in letter.headers:
        method, _, path = (value or b"").decode(errors="replace").partition(" ")
        if name == "http_request" and path.startswith("/fhir"):
            return method, path
    if not isinstance(body, dict) or body.get("resourceType") == "Bundle":
        return "POST", "/fhir"
    if isinstance(body.get("id"), str) and body["id"]:
        return "PUT", f"/fhir/{body['resourceType']}/{body['id']}"
    return "POST", f"/fhir/{body.get('resourceType')}"


@router.post("/{letter_id}/resubmit")
async def resubmit(request: Request, session: SessionDep, letter_id: LetterId) -> Response:
    found = await _letter(request, session, letter_id, f"/deadletters/{letter_id}")
    fields = await form(request)
    if not csrf_ok(session, fields.get("csrf")):
        return refused(request, session, "The form's CSRF token does not match your session.")
    if not _may_resubmit(session, found):
        return refused(request, session, "Only the facility that sent a letter to the "
                       "gateway may re-submit it.")
    ctx = context(request)
    text = fields.get("body", "")
    try:
        method, path = _target(found, orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        method, path = _target(found, None)
        result = {"status": 400, "text": f"not JSON: {exc}"}
    else:
        token = ctx.directory.get(session.principal.id).token  # type: ignore[union-attr]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=request.app),
                                     base_url="http://console", timeout=60) as client:
            answer = await client.request(
                method, path, content=text.encode(),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/fhir+json"})
        result = {"status": answer.status_code, "text": answer.text[:4000]}
    ok = 200 <= result["status"] < 300
    await run_in_threadpool(audit, ctx, session.principal, "update",
                            f"deadletters/{letter_id}/resubmit {method} {path}",
                            {found.patient_key or ""}, "0" if ok else "4")
    return _show(request, session, found, text, result, 200 if ok else 422)
