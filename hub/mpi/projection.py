"""The master patient index as tables, folded from the log.

Two kinds of events feed it: facilities' Patient events (their demographics, pseudonymised:
identifiers only as keyed hashes) and the hub's own Person and Task events (who is linked to
whom, and the review queue). Person events carry the person's whole set of records, so the
fold is plain upserts guarded by the ledger's sequence number: a rebuild gives the same
tables as live processing, whatever the batch boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.engine.projection import Change, Event, Upsert
from hub.envelope import HUB_SOURCE
from hub.identity import identity_secret
from hub.mpi.demographics import extract, to_row
from hub.mpi.ledger import MPI_SYSTEM, decided_of, person_records, review_of
from hub.record.rules import from_time_order, version_order

RECORDS, PERSONS, LINKS, DECIDED, REVIEWS = (
    "mpi_record", "mpi_person", "mpi_link", "mpi_decided", "mpi_review")


class MpiProjection:
    name = "mpi"
    # 2: records ordered by the sender's versionId first (record.rules.version_order); the
    # decisions already on the log, which name versions in the older time-first form, are
    # read in the new one (from_time_order), so the rebuild this version starts re-keys
    # every table and decides again only records whose current version changed.
    version = 2

    def tables(self, metadata: sa.MetaData, suffix: str = "") -> dict[str, sa.Table]:
        s = suffix
        records = sa.Table(
            RECORDS + s, metadata,
            sa.Column("record_key", sa.String(200), primary_key=True),
            sa.Column("order_key", sa.String(320), nullable=False),
            *(sa.Column(c, sa.String(200)) for c in (
                "national_id", "health_card", "name", "pinyin", "birth_date", "sex", "phone")),
            sa.Column("address", sa.Text),
        )
        persons = sa.Table(
            PERSONS + s, metadata,
            sa.Column("person_id", sa.String(40), primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("active", sa.Boolean, nullable=False),
            sa.Column("merged_into", sa.String(40)),
            sa.Column("body", sa.Text, nullable=False),
        )
        links = sa.Table(
            LINKS + s, metadata,
            sa.Column("record_key", sa.String(200), primary_key=True),
            sa.Column("person_id", sa.String(40), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        sa.Index(f"ix_{links.name}_person", links.c.person_id)
        decided = sa.Table(
            DECIDED + s, metadata,
            sa.Column("record_key", sa.String(200), primary_key=True),
            sa.Column("order_key", sa.String(320), nullable=False),
        )
        reviews = sa.Table(
            REVIEWS + s, metadata,
            sa.Column("review_id", sa.String(40), primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        return {RECORDS: records, PERSONS: persons, LINKS: links, DECIDED: decided,
                REVIEWS: reviews}

    def apply(self, events: Sequence[Event]) -> list[Change]:
        out: list[Change] = []
        secret = None
        for e in events:
            rtype = e.resource_type
            if e.source == HUB_SOURCE:
                if rtype == "Person":
                    out += _person(e)
                elif rtype == "Task":
                    task = orjson.loads(e.data)
                    if not _is_review(task):
                        continue  # the hub's other Tasks (remote monitoring's escalations)
                    seq = int(task["meta"]["versionId"])
                    out.append(Upsert(REVIEWS, {"review_id": task["id"], "seq": seq,
                                                "status": review_of(task).status,
                                                "body": e.data.decode()},
                                      ("review_id",), guard="seq"))
                continue
            if rtype != "Patient" or e.is_delete:
                continue
            secret = secret or identity_secret()
            patient = orjson.loads(e.data)
            key = f"{e.facility_id}.{e.resource_id}"
            meta = patient.get("meta") or {}
            row = to_row(extract(patient, key, secret))
            row["order_key"] = version_order(meta.get("lastUpdated"), meta.get("versionId"),
                                                e.time) + f"|{e.id}"
            out.append(Upsert(RECORDS, row, ("record_key",), guard="order_key"))
        return out


def _person(e: Event) -> list[Change]:
    person = orjson.loads(e.data)
    seq = int(person["meta"]["versionId"])
    active = bool(person.get("active", True))
    merged_into = None if active else person["link"][0]["target"]["reference"].split("/")[1]
    out: list[Change] = [Upsert(PERSONS, {
        "person_id": person["id"], "seq": seq, "active": active, "merged_into": merged_into,
        "body": e.data.decode()}, ("person_id",), guard="seq")]
    for r in person_records(person):
        out.append(Upsert(LINKS, {"record_key": r, "person_id": person["id"], "seq": seq},
                          ("record_key",), guard="seq"))
    for d in decided_of(person):
        record, _, order_key = d.partition("@")
        out.append(Upsert(DECIDED, {"record_key": record,
                                    "order_key": from_time_order(order_key)},
                          ("record_key",), guard="order_key"))
    return out


def _is_review(task: dict) -> bool:
    return any(c.get("system") == MPI_SYSTEM
               for c in (task.get("code") or {}).get("coding") or ())
