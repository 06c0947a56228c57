"""Upgrading the patient index and the recognition orders to version order, on every store:
tables an earlier version of the projection left (order keys lastUpdated first) are re-keyed
when the hub starts, the patient index's decisions already on the log still count for the
versions they named, a record whose current version changes with the new order is decided
again, and the result equals the tables live processing builds from the same events."""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from hub.engine import tracking
from hub.engine.projection import Event
from hub.engine.rebuild import ensure_built, live_tables
from hub.engine.writer import write
from hub.envelope import HUB_SOURCE, Envelope, new_event
from hub.mpi.ledger import Ledger
from hub.mpi.projection import DECIDED, RECORDS, MpiProjection
from hub.mpi.service import MPI_KEY, pending
from hub.recognition.projection import ORDERS, RecognitionProjection
from hub.record.rules import utc_instant, version_order
from hub.signing import demo_signer
from hub.store.schema import journal


def time_first(last_updated, version_id, event_time: str) -> str:
    """The order key version 1 wrote (and its decisions on the log name)."""
    when = utc_instant(last_updated or event_time)
    version = str(version_id or "0")
    return f"{when}|{int(version):012d}" if version.isdigit() else f"{when}|{version}"


def patient(pid: str, version: str | None, phone: str) -> dict:
    res = {"resourceType": "Patient", "id": pid, "gender": "female",
           "name": [{"text": "王秀英", "family": "王", "given": ["秀英"]}],
           "birthDate": "1958-03-02", "telecom": [{"system": "phone", "value": phone}]}
    if version is not None:
        res["meta"] = {"versionId": version}
    return res


def sent(res: dict, time: str) -> Envelope:
    return demo_signer("township-1").sign(new_event(
        "township-1", "Patient", res["id"], f"township-1.{res['id']}", orjson.dumps(res),
        time=time))


def decisions(ledger: Ledger, envs: list[Envelope]) -> list[Envelope]:
    """What version 1 of the index published for the records' versions it saw last."""
    out = []
    for env in envs:
        res = orjson.loads(env.data)
        key = f"township-1.{res['id']}"
        old = time_first(None, (res.get("meta") or {}).get("versionId"), env.time)
        out += ledger.ensure(key, decided=f"{key}@{old}|{env.id}")
    return [demo_signer("hub").sign(Envelope(
        id=f"mpi-{r['meta']['versionId']}-{r['resourceType']}-{r['id']}", source=HUB_SOURCE,
        type=f"fhir.{r['resourceType']}.upsert.v1", subject=f"{r['resourceType']}/{r['id']}",
        time="2026-11-30T09:00:00Z", key=MPI_KEY, data=orjson.dumps(r))) for r in out]


def rows(store, tables) -> dict[str, list[tuple]]:
    with store.connect() as conn:
        return {name: sorted(tuple(r) for r in conn.execute(sa.select(t)))
                for name, t in tables.items()}


def test_version_1_tables_are_re_keyed_and_old_decisions_still_count(store):
    a = sent(patient("a", "1", "13800000001"), "2026-11-30T08:00:00Z")
    b2 = sent(patient("b", "2", "13800000022"), "2026-11-30T08:01:00Z")
    c = sent(patient("c", None, "13800000003"), "2026-11-30T08:02:00Z")
    b1 = sent(patient("b", "1", "13800000021"), "2026-11-30T08:03:00Z")  # late version 1
    # Version 1 kept b's late version 1 (it arrived last, stamped by nobody) and decided it.
    patients = [a, b2, c, b1]
    published = decisions(Ledger(), [a, c, b1])
    log = patients + published
    with store.begin() as conn:
        conn.execute(sa.insert(journal), [
            {"event_id": e.id, "source": e.source, "type": e.type, "subject": e.subject,
             "time": e.time, "key": e.key, "signature": e.signature, "data": e.data,
             "topic": "hie.events.v1", "topic_id": "t", "partition": 0, "offset": i}
            for i, e in enumerate(log)])

    # The tables as version 1 left them: every order key lastUpdated first.
    projection = MpiProjection()
    tables = live_tables(projection)
    events = [Event.from_envelope(e, "hie.events.v1", 0, i) for i, e in enumerate(log)]
    with store.begin() as conn:
        for t in tables.values():
            t.create(conn)
        write(conn, tables, projection.apply([e for e in events if e.source == HUB_SOURCE]))
        write(conn, tables, projection.apply([events[patients.index(e)] for e in (a, c, b1)]))
        for env in (a, c, b1):
            meta = orjson.loads(env.data).get("meta") or {}
            key = f"township-1.{orjson.loads(env.data)['id']}"
            old = time_first(None, meta.get("versionId"), env.time) + f"|{env.id}"
            for name in (RECORDS, DECIDED):
                conn.execute(sa.update(tables[name]).where(tables[name].c.record_key == key)
                             .values(order_key=old))
        tracking.set_projection_state(conn, projection.name, 1, 0)
    assert {r["record_key"] for r in pending(store)} == set()

    ensure_built(store, projection)  # what the hub does on start with the new code

    with store.connect() as conn:
        assert tracking.projection_state(conn, projection.name)[0] == projection.version
        keys = {k: o for k, o in conn.execute(sa.select(tables[RECORDS].c.record_key,
                                                        tables[RECORDS].c.order_key))}
        phone_b = conn.execute(sa.select(tables[RECORDS].c.phone).where(
            tables[RECORDS].c.record_key == "township-1.b")).scalar_one()
    assert keys == {
        "township-1.a": version_order(None, "1", a.time) + f"|{a.id}",
        "township-1.b": version_order(None, "2", b2.time) + f"|{b2.id}",
        "township-1.c": version_order(None, None, c.time) + f"|{c.id}"}
    assert phone_b == "13800000022"
    # a and c were decided at the versions they hold; b now holds version 2, never decided.
    assert [r["record_key"] for r in pending(store)] == ["township-1.b"]

    # Live processing of the same log, one event per batch, gives the same tables.
    fresh = projection.tables(sa.MetaData(), "_live")
    with store.begin() as conn:
        for t in fresh.values():
            t.create(conn)
        for e in events:
            write(conn, fresh, projection.apply([e]))
    assert rows(store, fresh) == rows(store, tables)


def test_recognition_orders_of_version_2_are_re_keyed_so_later_versions_still_land(store):
    def order(v: int) -> Envelope:
        res = {"resourceType": "ServiceRequest", "id": "o1", "meta": {"versionId": str(v)},
               "status": "active", "intent": "order", "authoredOn": f"2026-11-0{v}",
               "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
               "subject": {"reference": "Patient/p7"}}
        return demo_signer("township-1").sign(new_event(
            "township-1", "ServiceRequest", "o1", "township-1.p7", orjson.dumps(res),
            time=f"2026-11-30T08:0{v}:00Z"))

    v1, v2 = order(1), order(2)
    with store.begin() as conn:
        conn.execute(sa.insert(journal), [{
            "event_id": v1.id, "source": v1.source, "type": v1.type, "subject": v1.subject,
            "time": v1.time, "key": v1.key, "signature": v1.signature, "data": v1.data,
            "topic": "hie.events.v1", "topic_id": "t", "partition": 0, "offset": 0}])
    projection = RecognitionProjection()
    tables = live_tables(projection)
    orders = tables[ORDERS]
    with store.begin() as conn:
        for t in tables.values():
            t.create(conn)
        write(conn, tables, projection.apply([Event.from_envelope(v1, "hie.events.v1", 0, 0)]))
        conn.execute(sa.update(orders).values(
            order_key=time_first(None, "1", v1.time) + f"|{v1.id}"))
        tracking.set_projection_state(conn, projection.name, 2, 0)

    ensure_built(store, projection)
    with store.begin() as conn:
        write(conn, tables, projection.apply([Event.from_envelope(v2, "hie.events.v1", 0, 1)]))
    with store.connect() as conn:
        assert conn.execute(sa.select(orders.c.authored)).scalar_one() == "2026-11-02"
