"""A resource about a patient belongs to that patient for good.

Adapters that build ids from what a facility's system sends (HL7 v2: order numbers, set
ids) can be handed the same id for two patients: a filler number reused by the LIS, a
result keyed to the wrong order. Folding such a message would move the first patient's
result to the second. So the adapter claims each resource for its patient before publishing
it: the first claim of an id wins, for good; a claim naming another patient is a conflict
and the message is refused. Claims are inserted-if-absent and read back in one transaction,
so two listeners racing on one id agree on its owner, and a refused message leaves no claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa

from hub.engine.writer import dialect_insert
from hub.store.db import Store
from hub.store.schema import resource_patients


class Claim(NamedTuple):
    resource_type: str
    id: str  # hub-wide id
    patient_key: str


class Conflict(NamedTuple):
    claim: Claim
    owner: str  # the patient key the resource belongs to


class _Refused(Exception):
    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts


def claim_patients(store: Store, claims: Sequence[Claim]) -> list[Conflict]:
    """Claim every resource for its patient; the conflicts, or [] when all claims hold
    (then they are kept; with any conflict none of them is)."""
    if not claims:
        return []
    rows = [c._asdict() for c in claims]
    try:
        with store.begin() as conn:
            conn.execute(dialect_insert(conn, resource_patients).on_conflict_do_nothing(
                index_elements=["resource_type", "id"]), rows)
            owners: dict[tuple[str, str], str] = {}
            for rtype in {c.resource_type for c in claims}:
                ids = [c.id for c in claims if c.resource_type == rtype]
                for i in range(0, len(ids), 900):  # under every driver's bind-parameter limit
                    for rid, key in conn.execute(
                            sa.select(resource_patients.c.id, resource_patients.c.patient_key)
                            .where(resource_patients.c.resource_type == rtype,
                                   resource_patients.c.id.in_(ids[i:i + 900]))):
                        owners[(rtype, rid)] = key
            conflicts = [Conflict(c, owners[(c.resource_type, c.id)]) for c in claims
                         if owners.get((c.resource_type, c.id), c.patient_key) != c.patient_key]
            if conflicts:
                raise _Refused(conflicts)  # rolls the claims of this call back
    except _Refused as refused:
        return refused.conflicts
    return []
