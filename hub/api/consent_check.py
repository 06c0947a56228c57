"""Consent at the read API's edge: who the reader is as a consent names it, and the 403
OperationOutcome (audited) when a patient's consent keeps it out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from hub import clock
from hub.access.rules import Principal
from hub.api.deps import HubContext
from hub.api.guard import audit
from hub.api.outcome import FhirResponse, error
from hub.consent import read as consent_read
from hub.consent.rules import OPERATIONS, TREATMENT, Reader

CONSENT_MARK = " [consent "  # in an audit record's ``what``: the consent that refused it


def consent_reader(ctx: HubContext, p: Principal, purpose: str | None = None) -> Reader:
    """A member facility reads for treatment, an app for the consortium's operations,
    unless the caller names another purpose (a de-identified export: research)."""
    facility = ctx.directory.get(p.id) if p.kind == "facility" else None
    return Reader(p.kind, p.id, purpose or (TREATMENT if p.kind == "facility" else OPERATIONS),
                  facility.tier if facility else None, facility.group if facility else None)


def refused_by_consent(ctx: HubContext, p: Principal, patient_key: str, interaction: str,
                       what: str, purpose: str | None = None,
                       withheld: Mapping[str, str] | None = None) -> FhirResponse | None:
    """None when no consent keeps ``p`` out of ``patient_key``'s record; else the 403, with
    the refusal audited (outcome 4, naming the consent). ``withheld``: what
    ``withheld_links`` said of this patient, when the caller needs that too (it answers
    this question as well, so the consents are read once)."""
    if withheld is not None:
        consent_id = withheld.get(patient_key)
    else:
        rule = consent_read.refusal(ctx.store, consent_reader(ctx, p, purpose), patient_key,
                                    clock.now())
        consent_id = rule.consent_id if rule else None
    if consent_id is None:
        return None
    audit(ctx, p, interaction, f"{what}{CONSENT_MARK}Consent/{consent_id}]",
          {patient_key}, "4")
    return consent_refused(consent_id)


def consent_refused(consent_id: str) -> FhirResponse:
    return error(403, f"a consent rule applied: the patient's Consent/{consent_id} does "
                 "not permit sharing this record with you for this purpose", "forbidden")


def consent_excluded(ctx: HubContext, p: Principal, purpose: str | None = None
                     ) -> dict[str, str]:
    """The patient records a search without a patient, or an export, leaves out for ``p``,
    each with the hub id of the consent that keeps it out."""
    return consent_read.refused_records(ctx.store, consent_reader(ctx, p, purpose),
                                        clock.now())


def withheld_links(ctx: HubContext, p: Principal, patient_key: str, purpose: str | None = None
                   ) -> dict[str, str]:
    """The records of the resident ``patient_key`` belongs to that a consent keeps ``p`` out
    of: ``patient_key`` itself when the read is refused, and otherwise (a reader's own
    record) those of the same resident elsewhere, which the read leaves out."""
    return consent_read.refused_links(ctx.store, consent_reader(ctx, p, purpose), patient_key,
                                      clock.now())


T = TypeVar("T")


def consented(ctx: HubContext, p: Principal, items: Iterable[T],
              patients_of: Callable[[T], Iterable[str | None]],
              purpose: str | None = None) -> list[T]:
    """``items`` (a worklist's studies, a team's alerts, the index's reviews ...) without
    those about a patient record a consent keeps ``p`` out of. A list leaves them out
    silently, as a search without a patient does: the reader did not ask for that patient,
    so there is no refusal to answer or audit."""
    items = list(items)
    excluded = consent_read.refused_among(
        ctx.store, consent_reader(ctx, p, purpose),
        {k for i in items for k in patients_of(i) if k}, clock.now())
    if not excluded:
        return items
    return [i for i in items if not any(k in excluded for k in patients_of(i) if k)]
