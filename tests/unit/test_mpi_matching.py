"""The master patient index links one resident's records and keeps different residents apart."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.demo.noisy_population import evaluate, generate
from hub.demo.population import gb11643_check
from hub.mpi.demographics import (
    HEALTH_CARD_SYSTEM,
    NATIONAL_ID_SYSTEM,
    Demographics,
    extract,
    from_row,
    keyed_hash,
    to_pinyin,
    to_row,
)
from hub.mpi.matching import (
    CandidateIndex,
    Decision,
    Resolution,
    blocking_keys,
    compare,
    resolve,
)

SECRET = b"test-consortium-secret"
NAMES = ("张伟", "章伟", "张玮", "张磊", "王秀英", "王秀兰", "汪秀英", "李娜", "张子轩", "张子涵",
         "zhangwei")
PHONES = ("13812345678", "13987654321", "15000000001")
ADDRESSES = ("嘉兴南湖东栅人民路35号", "嘉兴南湖东栅人民路", "南湖东栅人民路35号",
             "嘉兴南湖东栅人民路37号", "嘉兴海盐澉浦新丰村3组12号", "嘉兴海盐澉浦新丰村3组")
NIDS = tuple(keyed_hash(f"nid-{i}", SECRET) for i in range(3))
CARDS = tuple(keyed_hash(f"card-{i}", SECRET) for i in range(2))


def national_id(body17: str) -> str:
    return body17 + gb11643_check(body17)


def demo(key: str = "village-1.p-000001", *, name: str | None = "张伟",
         birth: date | None = date(1975, 3, 8), sex: str | None = "male",
         phone: str | None = "13812345678", address: str | None = "嘉兴南湖东栅人民路35号",
         nid: str | None = None, card: str | None = None) -> Demographics:
    return Demographics(key, nid, card, name, to_pinyin(name) if name else None, birth, sex,
                        phone, address)


def swapped(d: date) -> date:
    return d.replace(month=d.day, day=d.month) if d.day <= 12 else d


births = st.dates(date(1925, 1, 1), date(2025, 12, 31))


@st.composite
def demographics(draw, key: str | None = None) -> Demographics:
    name = draw(st.none() | st.sampled_from(NAMES))
    return demo(key or draw(st.sampled_from(("village-1.p-1", "county-1.p-2", "city-1.p-3"))),
                name=name, birth=draw(st.none() | births),
                sex=draw(st.sampled_from(("male", "female", None))),
                phone=draw(st.none() | st.sampled_from(PHONES)),
                address=draw(st.none() | st.sampled_from(ADDRESSES)),
                nid=draw(st.none() | st.sampled_from(NIDS)),
                card=draw(st.none() | st.sampled_from(CARDS)))


@st.composite
def perturbed(draw, base: Demographics, key: str) -> Demographics:
    """A record sharing some of ``base``'s fields and disagreeing on others."""
    other = draw(demographics(key))
    values = {}
    for f in dataclasses.fields(Demographics):
        if f.name in ("record_key", "pinyin"):
            continue
        keep = draw(st.booleans())
        values[f.name] = getattr(base if keep else other, f.name)
    if values["birth_date"] is not None and draw(st.booleans()):
        values["birth_date"] = swapped(values["birth_date"])
    name = values["name"]
    return Demographics(record_key=key, pinyin=to_pinyin(name) if name else None, **values)


@st.composite
def pairs(draw) -> tuple[Demographics, Demographics]:
    a = draw(demographics("village-1.p-000001"))
    return a, draw(perturbed(a, "county-1.p-000009"))


@given(pairs())
def test_compare_is_symmetric(pair):
    a, b = pair
    ab, ba = compare(a, b), compare(b, a)
    assert ab == ba
    assert list(ab.reasons) == sorted(ab.reasons)


@given(pairs(), st.sampled_from(("sex", "birth")))
def test_same_national_id_with_other_sex_or_birth_is_a_conflict(pair, what):
    a, b = pair
    a = dataclasses.replace(a, national_id=NIDS[0], sex=a.sex or "male",
                            birth_date=a.birth_date or date(1980, 5, 17))
    if what == "sex":
        b = dataclasses.replace(b, national_id=NIDS[0],
                                sex="female" if a.sex == "male" else "male")
    else:
        b = dataclasses.replace(b, national_id=NIDS[0],
                                birth_date=a.birth_date - timedelta(days=400))
    assert compare(a, b).decision is Decision.CONFLICT
    assert "same national ID" in compare(a, b).reasons
    # Even with a perfect probabilistic twin of the record in the same person.
    twin = dataclasses.replace(a, record_key="city-1.p-000003", national_id=None)
    r = resolve(a, [(b, "person-1"), (twin, "person-1")])
    assert r.kind is Decision.CONFLICT and r.person == "person-1"


@given(pairs())
def test_different_national_ids_never_link(pair):
    a, b = pair
    a = dataclasses.replace(a, national_id=NIDS[0])
    b = dataclasses.replace(b, national_id=NIDS[1])
    assert compare(a, b).decision is Decision.DISTINCT
    same = dataclasses.replace(a, record_key="county-1.p-000002", national_id=NIDS[1])
    assert compare(a, same).decision is Decision.DISTINCT
    assert resolve(a, [(same, "person-1"), (b, "person-2")]).kind is not Decision.LINK


def test_a_person_with_another_national_id_is_not_a_probabilistic_candidate():
    known = demo("city-1.p-1", nid=NIDS[0])
    no_id_copy = demo("village-1.p-2")
    new = demo("county-1.p-3", nid=NIDS[1])
    assert resolve(new, [(known, "person-1"), (no_id_copy, "person-1")]).kind is Decision.DISTINCT


@settings(max_examples=60)
@given(st.data())
def test_resolve_does_not_depend_on_candidate_order(data):
    record = data.draw(demographics("village-1.p-000001"))
    n = data.draw(st.integers(1, 7))
    candidates = [(data.draw(perturbed(record, f"county-{i}.p-{i}")),
                   data.draw(st.sampled_from(("person-a", "person-b", "person-c"))))
                  for i in range(n)]
    expected = resolve(record, candidates)
    shuffled = data.draw(st.permutations(candidates))
    assert resolve(record, shuffled) == expected


def test_family_sharing_phone_and_address_is_not_linked():
    father = demo("village-1.p-1", name="张建国", birth=date(1958, 4, 2))
    for member in (demo("county-1.p-2", name="张秀英", birth=date(1961, 9, 30), sex="female"),
                   demo("county-1.p-3", name="张伟", birth=date(1985, 1, 12)),
                   demo("county-1.p-4", name="张建华", birth=date(1983, 6, 5))):
        assert compare(father, member).decision is Decision.DISTINCT
        assert resolve(member, [(father, "person-1")]).kind is Decision.DISTINCT


def test_phone_and_address_alone_do_not_link():
    a = demo("village-1.p-1", name=None, birth=None, sex=None)
    b = demo("county-1.p-2", name=None, birth=None, sex=None)
    assert compare(a, b).decision is Decision.DISTINCT


def test_twins_are_not_linked():
    a = demo("village-1.p-1", name="张子轩", birth=date(2012, 7, 7))
    b = demo("county-1.p-2", name="张子涵", birth=date(2012, 7, 7))
    assert compare(a, b).decision is not Decision.LINK


def test_homonyms_are_not_linked():
    a = demo("village-1.p-1", name="张伟", birth=date(1980, 3, 14))
    same_year = demo("county-1.p-2", name="张伟", birth=date(1980, 9, 2), phone="13987654321",
                     address="嘉兴海盐澉浦新丰村3组12号")
    same_month = dataclasses.replace(same_year, birth_date=date(1980, 3, 21))
    for other in (same_year, same_month):
        assert compare(a, other).decision is Decision.DISTINCT
        assert resolve(other, [(a, "person-1")]).kind is not Decision.LINK


def test_homophone_typo_links_when_birth_date_and_sex_match():
    a = demo("village-1.p-1", name="张伟", phone=None)
    b = demo("county-1.p-2", name="章伟", address="嘉兴南湖东栅人民路")
    m = compare(a, b)
    assert m.decision is Decision.LINK and "name pinyin equal" in m.reasons
    assert blocking_keys(a) & blocking_keys(b)


def test_swapped_day_and_month_links_and_shares_a_block():
    a = demo("village-1.p-1", name="王秀英", sex="female", birth=date(1962, 4, 9))
    b = demo("county-1.p-2", name="王秀英", sex="female", birth=date(1962, 9, 4))
    m = compare(a, b)
    assert m.decision is Decision.LINK and "birth date day/month swapped" in m.reasons
    other_char = dataclasses.replace(b, name="王秀荚", pinyin=to_pinyin("王秀荚"), phone=None)
    assert blocking_keys(a) & blocking_keys(other_char)


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "id": "p-000001",
            "identifier": [{"system": "urn:hie:facility:village-1:mrn", "value": "MRN00001"}],
            "name": [{"use": "official", "text": "张 伟", "family": "张", "given": ["伟"]}],
            "gender": "male", "birthDate": "1975-03-08",
            "telecom": [{"system": "phone", "value": "+86 138-1234-5678", "use": "mobile"}],
            "address": [{"use": "home", "text": "浙江省嘉兴市南湖区东栅街道人民路35号"}], **extra}


def test_extract_keeps_identifiers_only_as_keyed_hashes():
    nid = national_id("33040219750308123")
    res = patient()
    res["identifier"] += [{"system": NATIONAL_ID_SYSTEM, "value": nid.lower()},
                          {"system": HEALTH_CARD_SYSTEM, "value": "JK3304000123"}]
    d = extract(res, "village-1.p-000001", SECRET)
    row = to_row(d)
    dumped = json.dumps(row, ensure_ascii=False) + repr(d)
    for clear in (nid, nid.lower(), nid[:17], "JK3304000123", "3304000123"):
        assert clear not in dumped
    assert d.national_id == keyed_hash(nid, SECRET) != keyed_hash(nid, b"another-secret")
    assert (d.name, d.pinyin, d.phone, d.sex) == ("张伟", "zhangwei", "13812345678", "male")
    assert d.address == "嘉兴南湖东栅人民路35号"
    assert from_row(json.loads(json.dumps(row))) == d


def test_extract_tolerates_odd_fields():
    odd = patient(birthDate="1975-02-30", gender="unknown", telecom=[{"system": "email"}],
                  name=[{"use": "old", "text": "旧名"}, {"given": ["Wei"], "family": "Zhang"}])
    odd["identifier"].append({"system": NATIONAL_ID_SYSTEM, "value": "330402197503081230"})
    d = extract(odd, "k", SECRET)
    assert d.birth_date is None and d.sex is None and d.phone is None
    assert d.national_id is None  # wrong check digit: a keying error, not an identity
    assert (d.name, d.pinyin) == ("zhangwei", "zhangwei")
    bare = extract({"resourceType": "Patient", "id": "x"}, "k", SECRET)
    assert bare == Demographics("k", None, None, None, None, None, None, None, None)
    first_generation = patient()
    first_generation["identifier"].append({"system": NATIONAL_ID_SYSTEM,
                                           "value": "330402750308123"})
    assert extract(first_generation, "k", SECRET).national_id == keyed_hash(
        national_id("33040219750308123"), SECRET)


def test_candidate_index():
    index = CandidateIndex()
    a, b = demo("village-1.p-1"), demo("county-1.p-2", name="章伟")
    far = demo("city-1.p-3", name="李娜", birth=date(2001, 1, 1), phone=None, sex="female")
    index.add(a, "person-1")
    index.add(far, "person-2")
    assert index.candidates(b) == [(a, "person-1")]
    assert index.candidates(a) == []
    index.move(a.record_key, "person-9")
    assert index.candidates(b) == [(a, "person-9")]
    index.add(dataclasses.replace(a, name="李娜", pinyin="lina", birth_date=date(2001, 1, 1),
                                  phone=None, sex="female"), "person-9")
    assert index.candidates(b) == [] and len(index) == 2


def test_resolution_picks_the_best_person_deterministically():
    record = demo("village-1.p-1")
    weaker = demo("county-1.p-2", phone=None, address=None)
    stronger = demo("county-1.p-3")
    r = resolve(record, [(weaker, "person-b"), (stronger, "person-a")])
    assert r == Resolution(Decision.LINK, "person-a", "county-1.p-3", compare(record, stronger))
    tie = resolve(record, [(stronger, "person-z"), (dataclasses.replace(
        stronger, record_key="city-1.p-4"), "person-y")])
    assert tie.person == "person-y"


def test_quality_on_a_noisy_population():
    records = generate(3000, seed=11)
    q = evaluate(records, SECRET)
    assert q.records == len(records) > 5000
    assert q.precision >= 0.99, q
    assert q.recall >= 0.95, q
    assert q.conflicts > 0 and q.reviews > 0
