"""Patients' consents as the shared record holds them (the record projection folds the
Consent events like any other resource: newest version, deletions as tombstones).

A consent is the resident's: it binds every record the patient index links with the one it
was filed for, so an opt-out given at the township centre also covers the county hospital's
chart of the same person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa

from hub.consent.rules import ConsentRule, Reader, consent_rule, refusing
from hub.mpi.service import linked_records, linked_records_of
from hub.record.projection import TABLE, SharedRecordProjection
from hub.store.db import Store

CONSENT = "Consent"
record = SharedRecordProjection().tables(sa.MetaData())[TABLE]


def consents_of(store: Store, keys: Sequence[str], chunk: int = 500) -> list[ConsentRule]:
    """The rules of the live Consents filed for any of ``keys``."""
    wanted = sorted(set(keys))
    rows = []
    with store.connect() as conn:
        for i in range(0, len(wanted), chunk):
            rows += conn.execute(sa.select(record.c.id, record.c.patient_key, record.c.body)
                                 .where(record.c.resource_type == CONSENT,
                                        record.c.patient_key.in_(wanted[i:i + chunk]),
                                        record.c.body.is_not(None))).all()
    rows.sort(key=lambda row: row.id)
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


def refused_among(store: Store, reader: Reader, keys: Iterable[str], at: datetime
                  ) -> dict[str, str]:
    """Of the patient records ``keys`` (a worklist's patients), those ``reader`` is kept
    out of, with the consent that keeps it out. A few queries whatever the number of
    consents in the consortium: the keys' links, then the consents of those residents."""
    links = linked_records_of(store, (k for k in keys if "." in k))
    rules: dict[str, list[ConsentRule]] = {}
    for rule in consents_of(store, sorted({k for linked in links.values() for k in linked})):
        rules.setdefault(rule.patient_key, []).append(rule)
    out: dict[str, str] = {}
    for k, linked in links.items():
        found = refusing([r for x in linked for r in rules.get(x, ())], reader,
                         k.partition(".")[0], at)
        if found is not None:
            out[k] = found.consent_id
    return out


def refused_records(store: Store, reader: Reader, at: datetime) -> dict[str, str]:
    """Every patient record ``reader`` is kept out of, across the consortium, with the
    consent that keeps it out: what a search without a patient or an export leaves out.
    Consents are few (one per opting-out resident): this reads them all, and the links of
    those refusing the reader in a few queries rather than a pair per consent."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(record.c.id, record.c.patient_key, record.c.body).where(
            record.c.resource_type == CONSENT, record.c.body.is_not(None))
            .order_by(record.c.id)).all()
    refusing_rules = [rule for rule in (consent_rule(orjson.loads(row.body), row.id,
                                                     row.patient_key) for row in rows)
                      if rule is not None and rule.refuses(reader, at)]
    links = linked_records_of(store, {r.patient_key for r in refusing_rules})
    out: dict[str, str] = {}
    for rule in refusing_rules:
        for k in links[rule.patient_key]:
            if not (reader.kind == "facility" and k.partition(".")[0] == reader.id):
                out.setdefault(k, rule.consent_id)
    return out
