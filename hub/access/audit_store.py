"""The audit trail in SQL. A read's AuditEvents are committed before its answer is sent."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from hub.access.rules import AuditRecord
from hub.store.db import Store
from hub.store.schema import audit


def record(store: Store, records: Iterable[AuditRecord]) -> None:
    # Clipped to the columns' sizes: a key or agent named by untrusted input may be longer
    # (no real one is), and PostgreSQL would refuse the row rather than truncate it.
    rows = [{"id": r.id, "recorded": r.recorded, "agent_kind": r.agent_kind,
             "agent_id": r.agent_id[:100], "interaction": r.interaction, "what": r.what,
             "patient_key": r.patient_key[:200], "outcome": r.outcome} for r in records]
    if rows:
        with store.begin() as conn:
            conn.execute(sa.insert(audit), rows)


def trail(store: Store, patient_keys: list[str], count: int, offset: int
          ) -> tuple[int, list[AuditRecord]]:
    where = audit.c.patient_key.in_(patient_keys)
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(audit).where(where)
                             ).scalar_one()
        rows = conn.execute(sa.select(audit).where(where)
                            .order_by(audit.c.recorded.desc(), audit.c.id.desc())
                            .limit(count).offset(offset)).all()
    return total, [AuditRecord(*r) for r in rows]
