"""What every read route does around its answer: refuse with a 403 OperationOutcome, and
leave an AuditEvent for every read of patient data (a refused one too, with outcome 4)."""

from __future__ import annotations

from hub.access import audit_store
from hub.access.rules import AuditRecord, Principal, audit_id
from hub.api.deps import HubContext
from hub.api.outcome import FhirResponse, error
from hub.envelope import now_rfc3339


def audit(ctx: HubContext, who: Principal, interaction: str, what: str,
          patients: set[str], outcome: str = "0") -> None:
    """Record the read, committed before the answer is sent."""
    now = now_rfc3339()
    audit_store.record(ctx.store, [AuditRecord(audit_id(), now, who.kind, who.id, interaction,
                                               what, p, outcome) for p in sorted(patients)])


def forbidden(message: str) -> FhirResponse:
    return error(403, message, "forbidden")
