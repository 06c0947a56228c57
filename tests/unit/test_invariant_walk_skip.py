"""The invariants' element walk is skipped where the JSON shows nothing it looks for (the
resource's own, or the Bundle's that holds it): the findings must be exactly those of the
full walk, however the JSON is written (compact, indented, with characters escaped)."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.invariants import invariant_issues, walk_needed, walks_needed_in_bundle

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


def _judged(res: dict, raw: bytes) -> list[tuple[str, str]]:
    return invariant_issues(res, walk_needed(raw, res))


def writings(res: dict) -> list[bytes]:
    return [orjson.dumps(res), json.dumps(res, indent=2).encode(),
            json.dumps(res, ensure_ascii=True).encode(),  # é as \u00e9
            json.dumps(res, separators=(" , ", " : ")).encode()]


@settings(max_examples=400, deadline=None)
@given(resources())
def test_skipping_the_walk_finds_what_the_walk_finds(res):
    full = invariant_issues(res)
    for raw in writings(res):
        assert _judged(res, raw) == full


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
    found = _judged(res, raw)
    assert found == invariant_issues(res)
    assert {loc for loc, _ in found} == {"Observation.effectivePeriod", "Observation.code.id"}


def test_nothing_to_find_needs_no_walk_and_finds_nothing():
    res = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
           "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}
    assert _judged(res, orjson.dumps(res)) == [] == invariant_issues(res)


def test_an_element_id_is_checked_with_or_without_the_resources_own():
    for res in ({"resourceType": "Observation", "id": "o1", "code": {"id": "..."}},
                {"resourceType": "Observation", "code": {"id": "a b"}}):
        found = _judged(res, orjson.dumps(res))
        assert found == invariant_issues(res)
        assert [loc for loc, _ in found] == ["Observation.code.id"]


def test_a_string_over_a_megabyte_is_found():
    res = {"resourceType": "Observation", "id": "o1",
           "note": [{"text": "a" * (1024 * 1024 + 1)}]}
    found = _judged(res, orjson.dumps(res))
    assert [loc for loc, _ in found] == ["Observation.note[0].text"] == [
        loc for loc, _ in invariant_issues(res)]


@settings(max_examples=200, deadline=None)
@given(st.lists(resources(), min_size=1, max_size=4), st.booleans())
def test_skipping_every_entrys_walk_finds_what_the_walks_find(found, bundle_id):
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": r,
                         "request": {"method": "PUT", "url": f"{r['resourceType']}/x"}}
                        for i, r in enumerate(found)]}
    if bundle_id:
        bundle["id"] = "b1"
    for raw in writings(bundle):
        walk = walks_needed_in_bundle(raw, bundle)
        for r in found:
            assert invariant_issues(r, walk) == invariant_issues(r)


def _in_a_bundle(res: dict) -> list[tuple[str, str]]:
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": res, "request": {"method": "PUT", "url": "x"}}]}
    return invariant_issues(res, walks_needed_in_bundle(orjson.dumps(bundle), bundle))


def test_what_only_the_walk_finds_in_an_entry_is_found():
    nested = {"resourceType": "Observation", "id": "o1", "status": "final",
              "contained": [{"resourceType": "Observation", "valueString": "x",
                             "dataAbsentReason": {"text": "y"}}],
              "hasMember": [{"reference": "Observation/o2"}]}
    element_id = {"resourceType": "Observation", "id": "o1", "code": {"id": "a b"}}
    for res, where in ((nested, "Observation.contained[0].dataAbsentReason"),
                       (element_id, "Observation.code.id")):
        found = _in_a_bundle(res)
        assert found == invariant_issues(res)
        assert where in {loc for loc, _ in found}
    plain = {"resourceType": "Observation", "id": "o1", "status": "final"}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": plain}]}
    assert not walks_needed_in_bundle(orjson.dumps(bundle), bundle)
