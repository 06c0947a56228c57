"""A seeded population of residents registered at several facilities, with realistic noise.

It measures the master patient index: each resident gets 1-4 Patient records at different
facilities, and the records disagree the way real registers do (rates below). ``evaluate``
runs the matcher over them exactly as the hub does and reports pairwise precision and recall.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from hub.demo.population import (
    GIVEN,
    MIGRANT_REGIONS,
    MOBILE_PREFIXES,
    NATIONAL_ID_SYSTEM,
    START,
    STREETS,
    gb11643_check,
)
from hub.mpi.demographics import HEALTH_CARD_SYSTEM, extract, to_pinyin
from hub.mpi.matching import DEFAULT, CandidateIndex, Decision, Thresholds, resolve

# Noise rates, per record unless said otherwise.
MISSING_NATIONAL_ID = {"village": 0.50, "township": 0.40, "county": 0.25, "city": 0.20}
HEALTH_CARD_HOLDERS = 0.30  # per resident; each record then carries the card half the time
HOMOPHONE_TYPO = 0.04  # an input-method slip: 张伟 keyed as 章伟, same toneless pinyin
OTHER_CHAR_TYPO = 0.01  # a different character: 王秀英 keyed as 王秀荚
# Where the ID card is read, the HIS fills the birth date from it; keyed by hand, day and
# month get swapped (only when both orders are dates).
SWAPPED_DAY_MONTH = {"no_id": 0.03, "id": 0.005}
WRONG_SEX_WITH_ID = 0.002  # ID present but sex keyed wrong: the hub must flag a CONFLICT
WRONG_BIRTH_WITH_ID = 0.003
UNKNOWN_SEX = 0.003
MISSING_PHONE = 0.20
CHANGED_PHONE = 0.06
ADDRESS_ABBREVIATED = 0.30  # 浙江省嘉兴市南湖区 -> 嘉兴南湖, or a segment left out
ADDRESS_NO_NUMBER = 0.10  # house, group or room number left out
ADDRESS_MOVED = 0.04
MISSING_ADDRESS = 0.05
HOMONYM_SHARE = 0.04  # residents given one of the very common names, in clusters of 2-4
HOMONYM_SAME_YEAR = 0.6  # share of those clusters whose members were born the same year
# Twins share surname, birth date, address and phone, and often one given-name character
# (子轩/子涵): the household members a matcher most easily merges.
TWIN_BIRTHS = 0.02  # per child
RECORDS_PER_PERSON = {1: 0.40, 2: 0.30, 3: 0.18, 4: 0.12}
HOUSEHOLD_SIZE = {1: 0.35, 2: 0.25, 3: 0.20, 4: 0.12, 5: 0.08}

FACILITIES = {**{f"village-{n}": 1.0 for n in range(1, 7)},
              **{f"township-{n}": 1.5 for n in range(1, 4)},
              "county-1": 2.0, "county-2": 2.0, "city-1": 2.5}
# (GB/T 2260 code, district, towns and sub-districts) of 嘉兴市.
JIAXING = (("330402", "南湖区", ("建设街道", "解放街道", "东栅街道", "七星街道", "新兴街道")),
           ("330411", "秀洲区", ("新城街道", "王店镇", "油车港镇", "洪合镇")),
           ("330421", "嘉善县", ("魏塘街道", "西塘镇", "姚庄镇", "干窑镇")),
           ("330424", "海盐县", ("武原街道", "澉浦镇", "秦山街道", "通元镇")),
           ("330481", "海宁市", ("硖石街道", "许村镇", "长安镇", "盐官镇")),
           ("330482", "平湖市", ("当湖街道", "乍浦镇", "新埭镇", "独山港镇")),
           ("330483", "桐乡市", ("梧桐街道", "乌镇镇", "濮院镇", "崇福镇")))
ROADS = (*STREETS, "禾兴路", "南湖路", "秀洲路", "勤俭路", "东升路", "由拱路", "庆丰路", "中环南路")
VILLAGES = ("新丰", "红星", "联合", "南星", "光明", "永丰", "东方", "民主", "跃进", "胜利", "曙光",
            "五星", "长水", "双桥", "庄史", "塘汇")
# Surnames by frequency; households share one.
SURNAMES = ("王" * 7 + "李" * 7 + "张" * 7 + "刘" * 5 + "陈" * 5 + "杨" * 3 + "黄" * 2 + "赵" * 2
            + "吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁"
            + "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方邹")
# (first characters, second characters, share of one-character given names) by generation:
# born before 1970, 1970-1994, 1995 on; GIVEN from the demo adds its fixed names.
_POOLS = {
    "female": (("秀桂玉凤淑美素翠金月", "英兰珍芳华梅琴花云荣", 0.10),
               ("丽海晓春小雪慧佳红", "娟燕红华萍霞琴丽敏", 0.45),
               ("欣梓雨子诗一可思佳语梦若", "怡涵桐琪萱诺馨雨彤瑶", 0.10)),
    "male": (("建国志德永福金根长忠", "国华强明林生民军平忠", 0.10),
             ("海晓志建文俊国伟立", "峰军华明伟林杰斌", 0.45),
             ("子浩宇梓俊一博睿铭思", "轩然航豪杰鸣泽宸辰阳", 0.10)),
}
_SINGLE = {"female": "丽敏静婷芳娟霞燕红艳娜琳萍颖洁雪", "male": "伟磊强勇军杰涛斌超鹏刚峰波辉明亮"}
COMMON_NAMES = (("张", "伟", "male"), ("王", "伟", "male"), ("王", "芳", "female"),
                ("李", "伟", "male"), ("李", "娜", "female"), ("王", "秀英", "female"),
                ("李", "秀英", "female"), ("张", "敏", "female"), ("李", "静", "female"),
                ("王", "静", "female"), ("刘", "伟", "male"), ("张", "丽", "female"),
                ("王", "磊", "male"), ("李", "强", "male"), ("张", "勇", "male"),
                ("王", "军", "male"), ("李", "军", "male"), ("张", "静", "female"))
# Candidate homophones; only pairs whose toneless pinyin really is equal are used.
_HOMOPHONE_GROUPS = (
    "张章 王汪 李里理 刘柳留 陈臣晨 杨阳扬 黄皇 赵照 吴武伍 周舟州 徐许 孙荪 马玛 朱珠 胡湖 郭国 "
    "何和河 高皋 林琳霖 罗萝 郑正 梁良凉 谢协 宋送 唐堂 韩寒 冯峰丰锋 邓登 曹槽 彭朋鹏 曾增 田甜 "
    "董懂 潘攀 袁元园 蔡菜 蒋江 余于鱼 叶业 程成承 魏卫 苏素 吕旅 丁叮 任仁 沈申 姚遥瑶 卢芦 "
    "姜江 钟忠中 陆路 汪王 范凡 金今 石时 夏霞 方芳 邹周 伟玮炜 磊蕾 强墙 勇永泳 军君均 "
    "杰洁婕 涛滔 斌彬 超潮 刚钢 波博 辉晖 明铭鸣 亮靓 丽莉俐 敏民 静晶菁 婷亭 娟鹃 霞侠 燕艳雁 "
    "红宏虹 娜那 萍平 颖英影 雪学 英瑛 兰岚 珍贞 秀绣 玉钰 凤峰 桂贵 淑舒 美梅 翠萃 琴勤 "
    "花华 云芸 荣容 建剑健 华桦 志智 德得 福富 根跟 生升 忠中 晓小 春纯 慧惠 佳家嘉 俊骏 "
    "欣新馨 梓子紫 雨宇语 诗师 一依 可珂 思斯 梦孟 怡宜仪 涵含晗 桐彤童 琪琦棋 萱轩宣 浩皓昊 "
    "睿瑞 航杭 豪浩 泽则 宸晨辰 阳杨洋 月悦 国果 民敏 平萍 林琳 立力丽 文雯")


def _homophones() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for group in _HOMOPHONE_GROUPS.split():
        for c in group:
            same = tuple(o for o in group if o != c and to_pinyin(o) == to_pinyin(c))
            if same:
                table[c] = tuple(sorted(set(table.get(c, ()) + same)))
    return table


HOMOPHONES = _homophones()
_ALL_GIVEN = "".join(sorted({c for pools in _POOLS.values() for a, b, _ in pools for c in a + b}
                            | set("".join(_SINGLE.values()))))


@dataclass
class _Person:
    pid: str
    family: str
    given: str
    sex: str
    birth: date
    national_id: str
    card: str | None
    phone: str | None
    address: list[str]  # segments: 省, 市, 区/县, 街道/镇, road or village, numbers...


@dataclass
class _Household:
    family: str
    district: tuple[str, str, tuple[str, ...]]
    address: list[str]
    phone: str
    members: list[_Person] = field(default_factory=list)


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.persons: list[_Person] = []
        self.counters: Counter[str] = Counter()
        self.issued: set[str] = set()

    def phone(self) -> str:
        return self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"

    def address(self) -> tuple[tuple[str, str, tuple[str, ...]], list[str]]:
        rng = self.rng
        district = rng.choice(JIAXING)
        town = rng.choice(district[2])
        if town.endswith("街道"):
            place, numbers = rng.choice(ROADS), [f"{rng.randint(1, 399)}号"]
            if rng.random() < 0.5:
                numbers += [f"{rng.randint(1, 30)}幢", f"{rng.randint(1, 6)}0{rng.randint(1, 4)}室"]
        else:
            place = rng.choice(VILLAGES) + "村"
            numbers = [f"{rng.randint(1, 12)}组", f"{rng.randint(1, 80)}号"]
        return district, ["浙江省", "嘉兴市", district[1], town, place, *numbers]

    def given(self, sex: str, birth: date) -> str:
        rng = self.rng
        generation = 0 if birth.year < 1970 else 1 if birth.year < 1995 else 2
        first, second, single = _POOLS[sex][generation]
        r = rng.random()
        if r < 0.2:
            return rng.choice(GIVEN[sex][generation])
        if r < 0.2 + single * 0.8:
            return rng.choice(_SINGLE[sex]) if generation == 1 else rng.choice(second)
        return rng.choice(first) + rng.choice(second)

    def birth(self, age: int) -> date:
        age = max(0, min(100, age))
        return START.date().replace(year=START.year - age) - timedelta(days=self.rng.randrange(365))

    def person(self, hh: _Household, sex: str, age: int, name: tuple[str, str] | None = None,
               birth: date | None = None) -> _Person:
        rng = self.rng
        birth = birth or self.birth(age)
        age = START.year - birth.year
        family, given = name or (hh.family, self.given(sex, birth))
        region = hh.district[0] if rng.random() < 0.85 else rng.choice(MIGRANT_REGIONS)
        body = ""
        while not body or body in self.issued:  # the police issue each number once
            seq = rng.randrange(1, 500) * 2 + (sex == "male")  # odd 17th digit for men
            body = f"{region}{birth:%Y%m%d}{seq:03d}"
        self.issued.add(body)
        card = (f"{region}{rng.randrange(10**12):012d}"
                if rng.random() < HEALTH_CARD_HOLDERS else None)
        # Children and many elderly give the family number; working-age adults their own.
        own = 0.92 if 16 <= age <= 70 else 0.5 if age > 70 else 0.0
        phone = self.phone() if rng.random() < own else hh.phone
        p = _Person(f"P{len(self.persons) + 1:06d}", family, given, sex, birth,
                    body + gb11643_check(body), card, phone, hh.address)
        self.persons.append(p)
        hh.members.append(p)
        return p

    def household(self, size: int, head_name: tuple[str, str, str] | None = None,
                  head_birth: date | None = None) -> None:
        rng = self.rng
        district, address = self.address()
        family = head_name[0] if head_name else rng.choice(SURNAMES)
        hh = _Household(family, district, address, self.phone())
        head_age = max(22, 1 + round(94 * rng.betavariate(2.0, 1.3)))
        sex = head_name[2] if head_name else rng.choice(("male", "female"))
        head = self.person(hh, sex, head_age, head_name[:2] if head_name else None, head_birth)
        hh.phone = head.phone or hh.phone
        head_age = START.year - head.birth.year
        other = "female" if sex == "male" else "male"
        plan = [(other, head_age + rng.randint(-5, 5))]
        plan += [(rng.choice(("male", "female")), head_age - rng.randint(22, 35))
                 for _ in range(2)]
        plan.append((rng.choice(("male", "female")), head_age + rng.randint(22, 30)))
        for i, (member_sex, age) in enumerate(plan[: size - 1]):
            if not 0 <= age <= 100:
                continue
            member = self.person(hh, member_sex, age)
            if i in (1, 2) and rng.random() < TWIN_BIRTHS:
                twin_sex = rng.choice(("male", "female"))
                given = member.given
                while given == member.given:  # parents never give twins one name
                    given = self.given(twin_sex, member.birth)
                    if len(member.given) == 2 and rng.random() < 0.5:
                        given = member.given[0] + rng.choice(_ALL_GIVEN)
                self.person(hh, twin_sex, age, (hh.family, given), member.birth)

    def population(self, persons: int) -> list[_Person]:
        rng = self.rng
        homonyms = round(persons * HOMONYM_SHARE)
        while len(self.persons) < homonyms:
            name = rng.choice(COMMON_NAMES)
            year = START.year - max(22, 1 + round(94 * rng.betavariate(2.0, 1.3)))
            same_year = rng.random() < HOMONYM_SAME_YEAR
            for _ in range(rng.randint(2, 4)):
                birth = (date(year, 1, 1) + timedelta(days=rng.randrange(365))
                         if same_year else None)
                self.household(_pick(rng, HOUSEHOLD_SIZE), name, birth)
        while len(self.persons) < persons:
            self.household(_pick(rng, HOUSEHOLD_SIZE))
        return self.persons[:persons]

    def record(self, p: _Person, facility: str) -> dict[str, Any]:
        rng = self.rng
        self.counters[facility] += 1
        pid = f"p-{self.counters[facility]:06d}"
        identifiers: list[dict[str, Any]] = [{
            "use": "usual", "system": f"urn:hie:facility:{facility}:mrn",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "MR", "display": "Medical record number"}]},
            "value": f"MRN{self.counters[facility]:05d}"}]
        has_id = rng.random() >= MISSING_NATIONAL_ID[facility.split("-")[0]]
        if has_id:
            identifiers.append({"use": "official", "system": NATIONAL_ID_SYSTEM,
                                "value": p.national_id})
        if p.card and rng.random() < 0.5:
            identifiers.append({"system": HEALTH_CARD_SYSTEM, "value": p.card})
        family, given = self.name_noise(p.family, p.given)
        sex: str = p.sex
        birth = p.birth
        if rng.random() < SWAPPED_DAY_MONTH["id" if has_id else "no_id"] and (
                birth.day <= 12 and birth.day != birth.month):
            birth = birth.replace(month=birth.day, day=birth.month)
        if has_id:
            r = rng.random()
            if r < WRONG_SEX_WITH_ID:
                sex = "female" if sex == "male" else "male"
            elif r < WRONG_SEX_WITH_ID + WRONG_BIRTH_WITH_ID:
                birth += timedelta(days=rng.choice((-1, 1)) * rng.randint(1, 400))
        if rng.random() < UNKNOWN_SEX:
            sex = "unknown"
        res: dict[str, Any] = {
            "resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
            "identifier": identifiers,
            "name": [{"use": "official", "text": family + given, "family": family,
                      "given": [given]}],
            "gender": sex, "birthDate": birth.isoformat(),
            "managingOrganization": {"reference": f"Organization/{facility}"}}
        r = rng.random()
        if r >= MISSING_PHONE and p.phone:
            phone = self.phone() if r < MISSING_PHONE + CHANGED_PHONE else p.phone
            res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
        address = self.address_noise(p.address)
        if address:
            res["address"] = [{"use": "home", "text": "".join(address),
                               "line": ["".join(address[3:])], "city": address[1] or None,
                               "district": address[2] or None, "state": address[0] or None,
                               "country": "CN"}]
            for key in ("city", "district", "state"):
                if res["address"][0][key] is None:
                    del res["address"][0][key]
        return res

    def name_noise(self, family: str, given: str) -> tuple[str, str]:
        rng = self.rng
        r = rng.random()
        if r < HOMOPHONE_TYPO:
            name = family + given
            positions = [i for i, c in enumerate(name) if c in HOMOPHONES]
            rng.shuffle(positions)
            for i in positions:
                typo = name[:i] + rng.choice(HOMOPHONES[name[i]]) + name[i + 1:]
                if to_pinyin(typo) == to_pinyin(name):  # context can change a reading
                    return typo[:len(family)], typo[len(family):]
        elif r < HOMOPHONE_TYPO + OTHER_CHAR_TYPO:
            i = rng.randrange(len(given))
            c = rng.choice([c for c in _ALL_GIVEN if to_pinyin(c) != to_pinyin(given[i])])
            return family, given[:i] + c + given[i + 1:]
        return family, given

    def address_noise(self, address: list[str]) -> list[str] | None:
        rng = self.rng
        if rng.random() < MISSING_ADDRESS:
            return None
        if rng.random() < ADDRESS_MOVED:
            address = self.address()[1]
        address = list(address)
        if rng.random() < ADDRESS_ABBREVIATED:
            if rng.random() < 0.7:
                address[0] = ""
            if rng.random() < 0.5:
                address[1] = rng.choice(("嘉兴", ""))
            if rng.random() < 0.4:
                address[2] = address[2][:-1]
            if rng.random() < 0.3:
                address[3] = ""
        if rng.random() < ADDRESS_NO_NUMBER:
            address = address[: rng.randint(5, len(address) - 1)]
        return address


def _pick(rng: random.Random, shares: dict[int, float]) -> int:
    return rng.choices(list(shares), list(shares.values()))[0]


def generate(persons: int, seed: int) -> list[tuple[str, dict]]:
    """(true person id, Patient) pairs in arrival order; key records with ``record_key``."""
    gen = _Generator(seed)
    rng = gen.rng
    out: list[tuple[str, dict]] = []
    names, weights = list(FACILITIES), list(FACILITIES.values())
    for p in gen.population(persons):
        chosen: list[str] = []
        wanted = _pick(rng, RECORDS_PER_PERSON)
        while len(chosen) < wanted:
            f = rng.choices(names, weights)[0]
            if f not in chosen:
                chosen.append(f)
        out.extend((p.pid, gen.record(p, f)) for f in chosen)
    rng.shuffle(out)
    return out


def record_key(patient: dict) -> str:
    """``<facility id>.<patient id>``, the facility taken from managingOrganization."""
    facility = patient["managingOrganization"]["reference"].removeprefix("Organization/")
    return f"{facility}.{patient['id']}"


@dataclass(frozen=True, slots=True)
class Quality:
    precision: float  # of record pairs put in one person, the share that are one resident
    recall: float  # of record pairs of one resident, the share put in one person
    pairs: int  # true same-resident record pairs
    reviews: int
    conflicts: int
    records: int
    seconds: float  # extract + candidates + resolve + index, all records

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else float("inf")


def evaluate(records: Sequence[tuple[str, dict]], secret: bytes,
             thresholds: Thresholds = DEFAULT) -> Quality:
    """Run the matcher over ``records`` in order, as the hub does, and score the persons."""
    index = CandidateIndex()
    assigned: list[str] = []
    reviews = conflicts = 0
    started = time.perf_counter()
    for _, patient in records:
        d = extract(patient, record_key(patient), secret)
        res = resolve(d, index.candidates(d), thresholds)
        if res.kind is Decision.LINK and res.person is not None:
            person = res.person
        else:
            person = f"mpi-{len(assigned) + 1}"  # REVIEW counts as not linked until a human says so
            reviews += res.kind is Decision.REVIEW
            conflicts += res.kind is Decision.CONFLICT
        index.add(d, person)
        assigned.append(person)
    seconds = time.perf_counter() - started

    truth = [true for true, _ in records]
    true_pairs = _pairs(Counter(truth))
    predicted = _pairs(Counter(assigned))
    both = _pairs(Counter(zip(truth, assigned, strict=True)))
    return Quality(precision=both / predicted if predicted else 1.0,
                   recall=both / true_pairs if true_pairs else 1.0, pairs=true_pairs,
                   reviews=reviews, conflicts=conflicts, records=len(records), seconds=seconds)


def _pairs(sizes: Counter[Any]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes.values())
