"""Decide whether two Patient records describe the same resident, and which person a new one joins.

Scores are Fellegi–Sunter match weights: the sum over fields of log2(m/u), where m is how often
a field agrees like this on two records of one resident and u how often it does so by chance
on two residents that share a blocking key. The weights below are rounded estimates of those
ratios for a county-sized consortium, checked against ``hub.demo.noisy_population``. A shared
national ID or health card decides on its own (±``ID_WEIGHT``) and is never overruled by the
other fields, except that disagreeing sex or birth date turns it into a CONFLICT for a human.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache

import jellyfish

from hub.mpi.demographics import Demographics


class Decision(StrEnum):
    LINK = "link"
    REVIEW = "review"
    DISTINCT = "distinct"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Match:
    score: float  # sum of log2 likelihood ratios (bits); identifiers add or subtract ID_WEIGHT
    decision: Decision
    reasons: tuple[str, ...]  # sorted, so both argument orders give the same tuple


@dataclass(frozen=True)
class Thresholds:
    link: float = 15.0
    review: float = 8.0

    def __post_init__(self) -> None:
        if self.review > self.link:
            raise ValueError(f"review threshold {self.review} above link threshold {self.link}")


DEFAULT = Thresholds()

ID_WEIGHT = 30.0
# A full name like 王秀英 is rarer than a surname plus one character (张伟, 王芳): the latter
# are the homonyms every register is full of, so they weigh less.
NAME_EQUAL_LONG, NAME_EQUAL_SHORT = 10.0, 7.0
NAME_PINYIN_EQUAL = 5.0  # an input-method homophone slip: 张伟 keyed as 章伟
# One character apart is as often a twin (张子轩 / 张子涵: same birth date, address and phone)
# as a typo, so it must not reach the link threshold even when everything else agrees; the
# typo then goes to review.
NAME_ONE_CHAR_LONG = -4.0
NAME_ONE_CHAR_SHORT = -5.0  # 张伟 / 张磊: the whole given name differs
NAME_DIFFERS = -8.0
BIRTH_EQUAL, BIRTH_SWAPPED, BIRTH_ONE_PART, BIRTH_DIFFERS = 10.0, 6.0, -5.0, -12.0
SEX_EQUAL, SEX_DIFFERS = 1.0, -8.0
# Households share a phone and an address, so agreement is weak evidence; people change
# numbers and move, so disagreement is weaker still.
PHONE_EQUAL, PHONE_DIFFERS = 4.0, -1.0
ADDRESS_EQUAL, ADDRESS_SIMILAR, ADDRESS_NEARBY, ADDRESS_DIFFERS = 3.0, 2.0, 0.0, -1.0

_NUMBER = re.compile(r"\d+")


def compare(a: Demographics, b: Demographics, thresholds: Thresholds = DEFAULT) -> Match:
    """How strongly two records look like one resident; symmetric in ``a`` and ``b``."""
    return _compare(a, b, thresholds)[0]


def _compare(a: Demographics, b: Demographics, thresholds: Thresholds) -> tuple[Match, bool]:
    """The match and whether an identifier (not the demographics) decided it."""
    score, reasons = _demographic_weight(a, b)
    for label, x, y in (("national ID", a.national_id, b.national_id),
                        ("health card", a.health_card, b.health_card)):
        if x is None or y is None:
            continue
        if x != y:
            reasons.append(f"different {label}")
            return Match(score - ID_WEIGHT, Decision.DISTINCT, tuple(sorted(reasons))), True
        reasons.append(f"same {label}")
        disagree = (a.sex is not None and b.sex is not None and a.sex != b.sex) or (
            a.birth_date is not None and b.birth_date is not None
            and a.birth_date != b.birth_date)
        decision = Decision.CONFLICT if disagree else Decision.LINK
        return Match(score + ID_WEIGHT, decision, tuple(sorted(reasons))), True
    decision = (Decision.LINK if score >= thresholds.link
                else Decision.REVIEW if score >= thresholds.review else Decision.DISTINCT)
    return Match(score, decision, tuple(sorted(reasons))), False


def _demographic_weight(a: Demographics, b: Demographics) -> tuple[float, list[str]]:
    # Every test below is symmetric, and the terms are added in a fixed order, so swapping
    # the arguments cannot change the float sum.
    score = 0.0
    reasons: list[str] = []
    if a.name is not None and b.name is not None:
        if a.name == b.name:
            score += NAME_EQUAL_LONG if len(a.name) >= 3 else NAME_EQUAL_SHORT
            reasons.append("name equal")
        elif a.pinyin and a.pinyin == b.pinyin:
            score += NAME_PINYIN_EQUAL
            reasons.append("name pinyin equal")
        elif jellyfish.damerau_levenshtein_distance(a.name, b.name) == 1:
            long = min(len(a.name), len(b.name)) >= 3
            score += NAME_ONE_CHAR_LONG if long else NAME_ONE_CHAR_SHORT
            reasons.append("name one character differs")
        else:
            score += NAME_DIFFERS
            reasons.append("name differs")
    if a.birth_date is not None and b.birth_date is not None:
        w, reason = _birth(a.birth_date, b.birth_date)
        score += w
        reasons.append(reason)
    if a.sex is not None and b.sex is not None:
        same = a.sex == b.sex
        score += SEX_EQUAL if same else SEX_DIFFERS
        reasons.append("sex equal" if same else "sex differs")
    if a.phone is not None and b.phone is not None:
        same = a.phone == b.phone
        score += PHONE_EQUAL if same else PHONE_DIFFERS
        reasons.append("phone equal" if same else "phone differs")
    if a.address is not None and b.address is not None:
        w, reason = _address(a.address, b.address)
        score += w
        reasons.append(reason)
    return score, reasons


def _birth(x: date, y: date) -> tuple[float, str]:
    if x == y:
        return BIRTH_EQUAL, "birth date equal"
    if x.year == y.year and x.month == y.day and x.day == y.month:
        return BIRTH_SWAPPED, "birth date day/month swapped"
    if (x.year == y.year) + (x.month == y.month) + (x.day == y.day) == 2:
        return BIRTH_ONE_PART, "birth date one part differs"
    return BIRTH_DIFFERS, "birth date differs"


def _address(x: str, y: str) -> tuple[float, str]:
    if x == y:
        return ADDRESS_EQUAL, "address equal"
    (tx, nx), (ty, ny) = _address_parts(x), _address_parts(y)
    short, long_ = (tx, ty) if len(tx) <= len(ty) else (ty, tx)
    # Abbreviations drop segments (省, 嘉兴市, the town) and leave the rest in order.
    if len(short) >= 4 and _is_subsequence(short, long_):
        k = min(len(nx), len(ny))
        if nx[:k] == ny[:k]:  # a missing house or room number is not a different one
            return ADDRESS_SIMILAR, "address similar"
        return ADDRESS_NEARBY, "address nearby"
    return ADDRESS_DIFFERS, "address differs"


@lru_cache(maxsize=65536)
def _address_parts(address: str) -> tuple[str, tuple[str, ...]]:
    return _NUMBER.sub("", address), tuple(_NUMBER.findall(address))


def _is_subsequence(short: str, long_: str) -> bool:
    it = iter(long_)
    return all(c in it for c in short)


def blocking_keys(d: Demographics) -> frozenset[str]:
    """Keys a true match shares with ``d`` even with one typo or a swapped day and month."""
    keys: set[str] = set()
    if d.national_id:
        keys.add(f"nid:{d.national_id}")
    if d.health_card:
        keys.add(f"card:{d.health_card}")
    bd = d.birth_date
    if d.pinyin:  # homophone typos keep the pinyin; a swapped day/month keeps the year
        keys.add(f"py:{d.pinyin}+{bd.year if bd else '?'}")
    if bd:  # other typos in the name keep the birth date; order day and month to survive a swap
        lo, hi = sorted((bd.month, bd.day))
        for sex in (d.sex,) if d.sex else ("male", "female"):
            keys.add(f"bd:{bd.year}-{lo:02d}-{hi:02d}+{sex}")
    if d.phone:
        keys.add(f"ph:{d.phone}")
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to do with a new record.

    LINK: join ``person``. REVIEW: become a new person and open a review against ``person``.
    DISTINCT: become a new person (``person`` and ``against`` are None; ``match`` is the best
    rejected one, if any). CONFLICT: become a new person, flagged against ``person``.
    """

    kind: Decision
    person: str | None
    against: str | None
    match: Match | None


def resolve(record: Demographics, candidates: Iterable[tuple[Demographics, str]],
            thresholds: Thresholds = DEFAULT) -> Resolution:
    """Pick the person ``record`` belongs to among ``(record, person id)`` candidates.

    Identifier links come first, then identifier conflicts, then the best probabilistic
    match. The result does not depend on candidate order: each choice takes the highest
    score, ties going to the smallest person id, then the smallest record key.
    """
    by_person: dict[str, list[tuple[Match, bool, str]]] = {}
    for cand, person in candidates:
        if cand.record_key == record.record_key:
            continue
        m, by_id = _compare(record, cand, thresholds)
        by_person.setdefault(person, []).append((m, by_id, cand.record_key))

    det_links: list[tuple[float, str, str, Match]] = []
    conflicts: list[tuple[float, str, str, Match]] = []
    probable: list[tuple[float, str, str, Match]] = []
    for person, matches in by_person.items():
        conflict = [t for t in matches if t[0].decision is Decision.CONFLICT]
        if conflict:
            # Whatever else agrees, a resident whose ID disagrees on sex or birth date needs
            # a human before anything is merged into this person.
            m, _, key = min(conflict, key=_rank)
            conflicts.append((m.score, person, key, m))
            continue
        if any(by_id and m.decision is Decision.DISTINCT for m, by_id, _ in matches):
            # Some record of this person carries a different national ID or card: however
            # well the rest agrees (even a shared card next to a different ID), these are two
            # residents, or a mix-up that linking would only spread.
            continue
        links = [t for t in matches if t[1] and t[0].decision is Decision.LINK]
        if links:
            m, _, key = min(links, key=_rank)
            det_links.append((m.score, person, key, m))
        else:
            best = min(matches, key=_rank)
            probable.append((best[0].score, person, best[2], best[0]))

    for kind, pool in ((Decision.LINK, det_links), (Decision.CONFLICT, conflicts)):
        if pool:
            _, person, key, m = _best(pool)
            return Resolution(kind, person, key, m)
    if not probable:
        return Resolution(Decision.DISTINCT, None, None, None)
    _, person, key, m = _best(probable)
    if m.decision is Decision.DISTINCT:
        return Resolution(Decision.DISTINCT, None, None, m)
    return Resolution(m.decision, person, key, m)


def _best(pool: list[tuple[float, str, str, Match]]) -> tuple[float, str, str, Match]:
    return min(pool, key=lambda t: (-t[0], t[1], t[2]))


def _rank(t: tuple[Match, bool, str]) -> tuple[float, str]:
    return -t[0].score, t[2]


class CandidateIndex:
    """In-memory blocking index of known records and the person each belongs to.

    Blocks larger than ``max_block`` (a shared placeholder phone, a very common name in a
    very large region) are skipped when looking up candidates; identifier blocks never are.
    """

    def __init__(self, max_block: int = 2000) -> None:
        self._max_block = max_block
        self._records: dict[str, tuple[Demographics, str]] = {}
        self._blocks: dict[str, set[str]] = {}

    def add(self, d: Demographics, person: str) -> None:
        """Index ``d`` as a record of ``person``, replacing an earlier version of the record."""
        old = self._records.get(d.record_key)
        if old is not None:
            for key in blocking_keys(old[0]):
                block = self._blocks.get(key)
                if block is not None:
                    block.discard(d.record_key)
                    if not block:
                        del self._blocks[key]
        self._records[d.record_key] = (d, person)
        for key in blocking_keys(d):
            self._blocks.setdefault(key, set()).add(d.record_key)

    def move(self, record_key: str, person: str) -> None:
        """Reassign a known record to another person (a merge or an unmerge)."""
        d, _ = self._records[record_key]
        self._records[record_key] = (d, person)

    def candidates(self, d: Demographics) -> list[tuple[Demographics, str]]:
        """Known records sharing a blocking key with ``d``, other than ``d``'s own record."""
        found: set[str] = set()
        for key in blocking_keys(d):
            block = self._blocks.get(key)
            if block is None:
                continue
            if len(block) > self._max_block and not key.startswith(("nid:", "card:")):
                continue
            found |= block
        found.discard(d.record_key)
        return [self._records[k] for k in sorted(found)]

    def person_of(self, record_key: str) -> str | None:
        entry = self._records.get(record_key)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._records)
