"""The invariants' element walk is skipped where the resource's own JSON shows nothing it
looks for: the findings must be exactly those of the full walk, however the JSON is
written (compact, indented, with characters escaped)."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.invariants import invariant_issues

KEYS = st.sampled_from(["id", "start", "end", "reference", "value", "code", "text", "note",
                        "status", "extension", "url", "display", "_given", "given"])
TEXTS = st.sampled_from(["", "a", "#", "#c1", "x.y", "...", "2020", "2021-03",
                         "2020-01-01T10:00:00Z", "id", "start", "null", "{}", "[]", "é"])
LEAVES = st.one_of(TEXTS, st.none(), st.integers(-3, 3), st.booleans())
ELEMENTS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12)
CONTAINED = st.fixed_dictionaries({"resourceType": st.just("Patient"),
                                   "id": st.sampled_from(["c1", "c2", ""])})


@st.composite
def resources(draw):
    res = {"resourceType": draw(st.sampled_from(["Observation", "Patient"]))}
    if draw(st.booleans()):
        res["id"] = draw(TEXTS)
    res.update(draw(st.dictionaries(KEYS.filter(lambda k: k != "id"), ELEMENTS, max_size=5)))
    if draw(st.booleans()):
        res["contained"] = draw(st.lists(CONTAINED, max_size=2))
    return res


def writings(res: dict) -> list[bytes]:
    return [orjson.dumps(res), json.dumps(res, indent=2).encode(),
            json.dumps(res, ensure_ascii=True).encode(),  # é as \u00e9
            json.dumps(res, separators=(" , ", " : ")).encode()]


@settings(max_examples=400, deadline=None)
@given(resources())
def test_skipping_the_walk_finds_what_the_walk_finds(res):
    full = invariant_issues(res)
    for raw in writings(res):
        assert invariant_issues(res, raw) == full


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def test_a_key_spelled_with_escapes_is_still_checked():
    res = {"resourceType": "Observation", "id": "o1",
           "effectivePeriod": {"start": "2020-02", "end": "2020-01"},
           "note": [{"text": "#x"}], "code": {"id": "..."}}
    raw = (f'{{"resourceType":"Observation","id":"o1","effectivePeriod":{{"'
           f'{_escaped("start")}":"2020-02","end":"2020-01"}},"note":[{{"text":"'
           f'{_escaped("#x")}"}}],"code":{{"{_escaped("id")}":"..."}}}}').encode()
    assert orjson.loads(raw) == res
    found = invariant_issues(res, raw)
    assert found == invariant_issues(res)
    assert {loc for loc, _ in found} == {"Observation.effectivePeriod", "Observation.code.id"}


def test_nothing_to_find_needs_no_walk_and_finds_nothing():
    res = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
           "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}
    assert invariant_issues(res, orjson.dumps(res)) == [] == invariant_issues(res)


def test_an_element_id_is_checked_with_or_without_the_resources_own():
    for res in ({"resourceType": "Observation", "id": "o1", "code": {"id": "..."}},
                {"resourceType": "Observation", "code": {"id": "a b"}}):
        found = invariant_issues(res, orjson.dumps(res))
        assert found == invariant_issues(res)
        assert [loc for loc, _ in found] == ["Observation.code.id"]


def test_a_string_over_a_megabyte_is_found():
    res = {"resourceType": "Observation", "id": "o1",
           "note": [{"text": "a" * (1024 * 1024 + 1)}]}
    found = invariant_issues(res, orjson.dumps(res))
    assert [loc for loc, _ in found] == ["Observation.note[0].text"] == [
        loc for loc, _ in invariant_issues(res)]
