"""Patients' consents as the shared record holds them (the record projection folds the
Consent events like any other resource: newest version, deletions as tombstones).

A consent is the resident's: it binds every record the patient index links with the one it
was filed for, so an opt-out given at the township centre also covers the county hospital's
chart of the same person.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub.consent.rules import ConsentRule, Reader, consent_rule, refusing
from hub.mpi.service import linked_records
from hub.record.projection import TABLE, SharedRecordProjection
from hub.store.db import Store

CONSENT = "Consent"
record = SharedRecordProjection().tables(sa.MetaData())[TABLE]


def consents_of(store: Store, keys: Sequence[str]) -> list[ConsentRule]:
    """The rules of the live Consents filed for any of ``keys``."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(record.c.id, record.c.patient_key, record.c.body).where(
            record.c.resource_type == CONSENT, record.c.patient_key.in_(list(keys)),
            record.c.body.is_not(None)).order_by(record.c.id)).all()
    return [r for r in (consent_rule(orjson.loads(row.body), row.id, row.patient_key)
                        for row in rows) if r is not None]


def refusal(store: Store, reader: Reader, patient_key: str, at: datetime
            ) -> ConsentRule | None:
    """The consent keeping ``reader`` out of ``patient_key``'s record, if one does."""
    owner = patient_key.partition(".")[0]
    if "." not in patient_key:
        return None  # not a patient's record (a facility's Organization, Practitioner ...)
    return refusing(consents_of(store, linked_records(store, patient_key)), reader, owner, at)


def refused_links(store: Store, reader: Reader, patient_key: str, at: datetime
                  ) -> dict[str, str]:
    """The records of the resident ``patient_key`` belongs to (itself and those the index
    links with it) that ``reader`` is kept out of, with the consent that keeps it out: what
    a read of one patient leaves out. Only that resident's consents are read."""
    keys = linked_records(store, patient_key)
    rules = consents_of(store, keys)
    out: dict[str, str] = {}
    for k in keys:
        if "." in k and (rule := refusing(rules, reader, k.partition(".")[0], at)):
            out[k] = rule.consent_id
    return out


def refused_records(store: Store, reader: Reader, at: datetime) -> dict[str, str]:
    """Every patient record ``reader`` is kept out of, across the consortium, with the
    consent that keeps it out: what a search without a patient or an export leaves out.
    Consents are few (one per opting-out resident), so this reads them all and follows
    each one's links."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(record.c.id, record.c.patient_key, record.c.body).where(
            record.c.resource_type == CONSENT, record.c.body.is_not(None))).all()
    out: dict[str, str] = {}
    for row in rows:
        rule = consent_rule(orjson.loads(row.body), row.id, row.patient_key)
        if rule is None or not rule.refuses(reader, at):
            continue
        for k in linked_records(store, row.patient_key):
            if not (reader.kind == "facility" and k.partition(".")[0] == reader.id):
                out.setdefault(k, rule.consent_id)
    return out
