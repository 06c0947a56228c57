"""The registry as the log tells it: every Organization event the hub published, folded into
the current entry per facility and a history that answers "as of" questions.

Only Organization events with ``ce_source`` = the hub count: a facility may publish its own
Organization resources (departments, say), but it cannot change the registry.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE

CURRENT = "registry_current"
HISTORY = "registry_history"


class RegistryProjection:
    name = "registry"
    version = 1

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        current = sa.Table(
            CURRENT + suffix, metadata,
            sa.Column("facility_id", sa.String(64), primary_key=True),
            sa.Column("valid_from", sa.String(40), nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=False),
        )
        history = sa.Table(
            HISTORY + suffix, metadata,
            sa.Column("facility_id", sa.String(64), primary_key=True),
            sa.Column("valid_from", sa.String(40), primary_key=True),
            sa.Column("event_id", sa.String(200), primary_key=True),
            sa.Column("body", sa.LargeBinary, nullable=False),
        )
        return {CURRENT: current, HISTORY: history}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        for e in events:
            if e.source != HUB_SOURCE or e.resource_type != "Organization" or e.is_delete:
                continue
            fid = e.resource_id
            # The event time is when the change took effect; a late older version must not
            # replace a newer current entry (guard), but it still belongs in the history.
            out.append(Upsert(CURRENT, {"facility_id": fid, "valid_from": e.time,
                                        "body": e.data}, ("facility_id",), guard="valid_from"))
            out.append(Upsert(HISTORY, {"facility_id": fid, "valid_from": e.time,
                                        "event_id": e.id, "body": e.data},
                              ("facility_id", "valid_from", "event_id"), replace=False))
        return out
