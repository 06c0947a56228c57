"""Version order from the source in the patient index and the recognition orders, on both
entry paths, as for the shared record (test_fhir_fidelity): whatever order a facility's
versions arrive in, and whatever each says or leaves out about when it was made, the
projection keeps the sender's newest version; a late version 1 never replaces version 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.engine.projection import Event
from hub.engine.writer import write
from hub.envelope import new_event
from hub.identity import identity_secret
from hub.ingest.bundle import plan_body
from hub.ingest.prepare import prepare_upsert
from hub.ingest.verdict import check_inbound
from hub.mpi.demographics import extract, to_row
from hub.mpi.projection import RECORDS, MpiProjection
from hub.recognition.projection import ORDERS, RecognitionProjection
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer
from tests.support.stores import sqlite_with

directory = load_directory(None)
township = directory.get("township-1")
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def patient_version(v: int) -> dict:
    return {"resourceType": "Patient", "id": "p7", "meta": {"versionId": str(v)},
            "identifier": [{"system": "urn:hie:facility:township-1:mrn", "value": "MRN7"}],
            "name": [{"text": "王秀英", "family": "王", "given": ["秀英"]}],
            "gender": "female", "birthDate": "1958-03-02",
            "telecom": [{"system": "phone", "value": f"1380000{v:04d}"}]}


def order_version(v: int) -> dict:
    return {"resourceType": "ServiceRequest", "id": "o1", "meta": {"versionId": str(v)},
            "status": "active", "intent": "order",
            "authoredOn": (T0 + timedelta(days=v)).isoformat(),
            "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
            "subject": {"reference": "Patient/p7"}}


def via_gateway(res: dict):
    p = prepare_upsert(township, res, res["resourceType"], members=directory)
    assert p.ok, p.issues
    return p.envelope


def via_bundle(res: dict):
    """A transaction Bundle POSTed to the gateway, its entry a PUT of the version."""
    body = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": res, "request": {"method": "PUT",
                                      "url": f"{res['resourceType']}/{res['id']}"}}]})
    plan = plan_body(township, body, members=directory)
    assert not plan.issues and not plan.refused_entries, plan
    (entry,) = plan.plan.entries
    return entry.envelope


def via_inbound(res: dict):
    env = demo_signer("township-1").sign(new_event(
        "township-1", res["resourceType"], res["id"], "township-1.p7", orjson.dumps(res)))
    verdict = check_inbound(directory, env.headers(), env.key.encode(), env.data)
    assert verdict.facility == "township-1", verdict
    return env


def fold(projection, envs) -> tuple:
    store, tables = sqlite_with(projection)
    events = [Event.from_envelope(e, "hie.events.v1", 0, i) for i, e in enumerate(envs)]
    with store.begin() as conn:
        write(conn, tables, projection.apply(events))
    return store, tables


# Stamps, where a version has one, are arbitrary: a sender's clock may be wrong, and a
# version without one takes its arrival time, so neither may decide against the number.
stamps = st.one_of(st.none(), st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1),
                                           timezones=st.just(UTC)))
arrivals = st.integers(2, 5).flatmap(lambda n: st.tuples(
    st.permutations(range(1, n + 1)), st.lists(stamps, min_size=n, max_size=n)))


def sent(make, v: int, stamp: datetime | None) -> dict:
    res = make(v)
    if stamp is not None:
        res["meta"]["lastUpdated"] = stamp.isoformat()
    return res


@settings(max_examples=30, deadline=None)
@given(arrivals, st.sampled_from([via_gateway, via_bundle, via_inbound]))
def test_the_patient_index_keeps_the_senders_newest_version(case, path):
    order, stamped = case
    envs = [path(sent(patient_version, v, stamped[v - 1])) for v in order]
    store, tables = fold(MpiProjection(), envs)
    with store.connect() as conn:
        row = conn.execute(sa.select(tables[RECORDS])).mappings().one()
    newest = patient_version(max(order))
    assert row["phone"] == to_row(extract(newest, "township-1.p7", identity_secret()))["phone"]
    assert row["order_key"].startswith(f"{max(order):012d}|")
    store.dispose()


@settings(max_examples=30, deadline=None)
@given(arrivals, st.sampled_from([via_gateway, via_bundle, via_inbound]))
def test_the_recognition_orders_keep_the_senders_newest_version(case, path):
    order, stamped = case
    envs = [path(sent(order_version, v, stamped[v - 1])) for v in order]
    store, tables = fold(RecognitionProjection(), envs)
    with store.connect() as conn:
        row = conn.execute(sa.select(tables[ORDERS])).mappings().one()
    assert row["authored"] == order_version(max(order))["authoredOn"]
    store.dispose()


def test_a_late_version_1_without_last_updated_does_not_replace_version_2():
    for make, projection, table, column in (
            (patient_version, MpiProjection(), RECORDS, "phone"),
            (order_version, RecognitionProjection(), ORDERS, "authored")):
        for path in (via_gateway, via_bundle, via_inbound):
            store, tables = fold(projection, [path(make(2)), path(make(1))])
            with store.connect() as conn:
                value = conn.execute(sa.select(tables[table].c[column])).scalar_one()
            assert value == (to_row(extract(make(2), "township-1.p7", identity_secret()))
                             ["phone"] if column == "phone" else make(2)["authoredOn"])
            store.dispose()
