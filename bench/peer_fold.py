"""The shared-record fold as the peers run it: one event in, one row of ``record_resources``
out, the same row ``hub.record.projection.SharedRecordProjection`` writes.

The same work per event as the hub's projection (parse the resource, order its version,
hash national IDs in Patients), so that a peer's figure is its machinery's, not a lighter
fold's. It imports nothing of ``hub.engine`` (nor SQLAlchemy): quixstreams runs it in an
environment of its own (its pins exclude the hub's pydantic), where only this module, the
pure rules it calls and orjson are importable.
"""

from __future__ import annotations

import orjson

from hub.envelope import HUB_SOURCE, SOURCE_PREFIX
from hub.identity import redact_body
from hub.record.rules import delete_order, deleted_version, version_order

Row = tuple[str, str, str, str, str | None]

# The hub's guarded upsert (hub.engine.writer on an Upsert with guard="order_key"): a late
# or repeated older version never replaces a newer one, so a replay is harmless.
UPSERT = ("INSERT INTO record_resources (resource_type, id, patient_key, order_key, body) "
          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_type, id) DO UPDATE SET "
          "patient_key = excluded.patient_key, order_key = excluded.order_key, "
          "body = excluded.body WHERE excluded.order_key > record_resources.order_key")

_PREFIX = len(SOURCE_PREFIX)
_HASHED_OID = b"urn:oid:2.16.156.10011.1."


def record_row(event_id: str, source: str, type_: str, subject: str, time: str, key: str,
               data: bytes) -> Row | None:
    """The row an event leaves in the shared record, or None for the hub's own events."""
    if source == HUB_SOURCE:
        return None
    rtype, rid = subject.split("/", 1)
    if type_.endswith(".delete.v1"):
        body, okey = None, delete_order(deleted_version(data), time)
    else:
        res = orjson.loads(data)
        meta = res.get("meta") or {}
        body = data.decode()
        if rtype == "Patient" and _HASHED_OID in data:
            body = redact_body(data, res).decode()
        okey = version_order(meta.get("lastUpdated"), meta.get("versionId"), time)
    return (rtype, f"{source[_PREFIX:]}.{rid}", key, f"{okey}|{event_id}", body)
