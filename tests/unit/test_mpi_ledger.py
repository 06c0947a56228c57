"""The person ledger: link, merge, unlink and reviews, folded the way a projection folds them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.fhir import validate
from hub.mpi.ledger import Ledger, fold

records = st.lists(st.from_regex(r"(village|township|county)-[1-3]\.p-[0-9]{1,3}",
                                 fullmatch=True), min_size=2, max_size=12, unique=True)


def ledger_with(keys: list[str], groups: list[int]) -> tuple[Ledger, list[dict]]:
    """A ledger where record i joins the person of record groups[i] (if earlier)."""
    ledger, log = Ledger(), []
    for i, key in enumerate(keys):
        log += ledger.ensure(key, decided=f"{key}@1")
        j = groups[i] % (i + 1)
        if j < i and ledger.person_of[keys[j]] != ledger.person_of[key]:
            log += ledger.link(key, ledger.person_of[keys[j]])
    return ledger, log


@st.composite
def populated(draw):
    keys = draw(records)
    groups = draw(st.lists(st.integers(0, 20), min_size=len(keys), max_size=len(keys)))
    return keys, groups


@given(populated(), st.data())
def test_link_then_unlink_gives_the_original_partition(pop, data):
    keys, groups = pop
    ledger, _ = ledger_with(keys, groups)
    lone = [k for k in keys if len(ledger.records_with(k)) == 1]
    if not lone or len(ledger.persons) < 2:
        return
    record = data.draw(st.sampled_from(lone))
    before = ledger.partition()
    others = sorted(p for p in ledger.persons if p != ledger.person_of[record])
    target = data.draw(st.sampled_from(others))
    ledger.link(record, target)
    assert ledger.person_of[record] == target and ledger.partition() != before
    ledger.unlink(record)
    assert ledger.partition() == before


@given(populated(), st.data())
def test_folding_the_published_resources_reproduces_the_ledger(pop, data):
    keys, groups = pop
    ledger, log = ledger_with(keys, groups)
    persons = sorted(ledger.persons)
    if len(persons) >= 2:
        a, b = data.draw(st.permutations(persons))[:2]
        log += ledger.merge(a, b)
    victim = data.draw(st.sampled_from(keys))
    log += ledger.unlink(victim)
    replayed = fold(log)
    assert replayed.partition() == ledger.partition()
    assert replayed.person_of == ledger.person_of and replayed.seq == ledger.seq
    # Each record is in exactly one person; every person is valid FHIR.
    assert sorted(r for rs in ledger.persons.values() for r in rs) == sorted(keys)
    for res in log:
        assert validate(res, res["resourceType"], types=("Person",)) == []


def test_merge_moves_every_record_and_remembers_the_survivor():
    ledger = Ledger()
    for k in ("a.1", "a.2", "b.1"):
        ledger.ensure(k)
    ledger.link("a.2", ledger.person_of["a.1"])
    p1, p2 = ledger.person_of["a.1"], ledger.person_of["b.1"]
    ledger.merge(p1, p2)
    assert ledger.records_with("b.1") == {"a.1", "a.2", "b.1"}
    assert ledger.survivor(p2) == p1
    with pytest.raises(KeyError):
        ledger.merge(p1, p2)  # p2 is no longer active
    ledger.unlink("b.1")
    assert ledger.records_with("a.1") == {"a.1", "a.2"} and ledger.records_with("b.1") == {"b.1"}


def test_reviews_open_and_close_once():
    ledger = Ledger()
    ledger.ensure("a.1")
    ledger.ensure("b.1")
    out = ledger.open_review("review", "b.1", ledger.person_of["a.1"], "a.1", 7.5,
                             ["name pinyin equal"])
    rid = out[0]["id"]
    assert ledger.reviews[rid].status == "requested"
    ledger.close_review(rid, link=True, by="facility:county-1")
    assert ledger.records_with("a.1") == {"a.1", "b.1"}
    assert ledger.reviews[rid].status == "completed"
    with pytest.raises(ValueError, match="already completed"):
        ledger.close_review(rid, link=False, by="x")
