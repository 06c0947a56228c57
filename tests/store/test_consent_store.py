"""Consents as the stores hold them: the three ways the hub asks who a consent keeps a
reader out of (one resident's linked records, a list's patients, everyone) give the same
answer, on every store, with links followed and a reader's own records never withheld."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from hub.consent.read import refused_among, refused_links, refused_records
from hub.consent.rules import TIER_SYSTEM, Reader
from hub.engine.projection import Event
from hub.engine.rebuild import ensure_built
from hub.engine.writer import write
from hub.mpi.projection import LINKS, MpiProjection
from hub.mpi.service import linked_records_of
from hub.record.projection import SharedRecordProjection
from tests.support.events import envelope
from tests.support.resources import consent, consent_actor, patient

RECORD = SharedRecordProjection()
AT = datetime(2026, 12, 1, tzinfo=UTC)
CITY = Reader("facility", "city-1", "TREAT", "city-hospital", "city-group")
COUNTY = Reader("facility", "county-1", "TREAT", "county-hospital", "county-community")


def fill(store, residents: int = 30) -> list[str]:
    """``residents`` patients at township-1; every third also at city-1 and county-1
    (linked), every fifth opted out of the city tier, every seventh with a consent that is
    not active."""
    events, links = [], []
    for i in range(residents):
        events.append(envelope(patient(f"p{i}", mrn=f"M{i}"), "township-1"))
        if i % 3 == 0:
            events.append(envelope(patient(f"c{i}", mrn=f"C{i}"), "city-1"))
            events.append(envelope(patient(f"h{i}", mrn=f"H{i}"), "county-1"))
            links += [{"record_key": k, "person_id": f"P{i}", "seq": i} for k in (
                f"township-1.p{i}", f"city-1.c{i}", f"county-1.h{i}")]
        deny = {"type": "deny", "actor": [consent_actor(TIER_SYSTEM, "city-hospital")]}
        if i % 5 == 0:
            events.append(envelope(consent(deny, cid=f"k{i}", pid=f"p{i}"), "township-1"))
        elif i % 7 == 0:
            events.append(envelope(consent(deny, cid=f"k{i}", pid=f"p{i}", status="inactive"),
                                   "township-1"))
    tables = ensure_built(store, RECORD)
    mpi = ensure_built(store, MpiProjection())
    with store.begin() as conn:
        write(conn, tables, RECORD.apply([Event.from_envelope(e, "t", 0, i)
                                          for i, e in enumerate(events)]))
        conn.execute(sa.insert(mpi[LINKS]), links)
    return [f"township-1.p{i}" for i in range(residents)] + [
        f"{f}.{x}{i}" for i in range(0, residents, 3) for f, x in (("city-1", "c"),
                                                                  ("county-1", "h"))]


def test_the_three_questions_agree(store):
    keys = fill(store)
    everyone = refused_records(store, COUNTY, AT)
    assert everyone == {}  # the consents name the city tier only
    everyone = refused_records(store, CITY, AT)
    # Opted out: p0, p5, p10 ... at the township, and the county's records linked with them;
    # the city's own linked records stay its own.
    assert everyone == {f"township-1.p{i}": f"township-1.k{i}" for i in range(0, 30, 5)} | {
        f"county-1.h{i}": f"township-1.k{i}" for i in (0, 15)}
    assert refused_among(store, CITY, keys, AT) == everyone
    assert refused_among(store, CITY, keys[:4], AT) == {"township-1.p0": "township-1.k0"}
    for k in keys:
        assert refused_links(store, CITY, k, AT) == {
            x: c for x, c in everyone.items() if x in linked_records_of(store, [k])[k]}
    # From the city's own record of p15: the township's and the county's records are
    # withheld, its own is not.
    assert refused_links(store, CITY, "city-1.c15", AT) == {
        "township-1.p15": "township-1.k15", "county-1.h15": "township-1.k15"}


def test_links_of_many_records_in_chunks(store):
    keys = fill(store)
    one_by_one = {k: linked_records_of(store, [k])[k] for k in keys}
    assert linked_records_of(store, keys, chunk=4) == one_by_one
    assert one_by_one["city-1.c3"] == ["city-1.c3", "county-1.h3", "township-1.p3"]
    assert one_by_one["township-1.p1"] == ["township-1.p1"]
