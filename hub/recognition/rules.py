"""Mutual test recognition (检查检验结果互认): may a prior result stand in for a new test?

Plain rules over plain data, following the 2022 national measures as regional platforms
apply them: only catalogue items; never items on the negative list; only final results
(an amended, corrected or retracted result does not qualify); only within the item's
validity period, counted in consortium (Asia/Shanghai) calendar days, end day included;
only from a facility of at least the item's tier that held a valid EQA pass for the item's
category *on the result date* (a lapse later does not undo it; a result dated after the
lapse never qualifies). For imaging, the images and measurements are recognised, never the
diagnostic conclusion: the receiving doctor decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from hub.clock import CONSORTIUM_TZ
from hub.registry.model import TIER_RANK, FacilityRecord


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    name: str
    category: str
    validity_days: int
    scope: str
    price_yuan: float
    loinc: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()
    body_site: tuple[str, ...] = ()
    eqa: str | None = None
    min_tier: str | None = None
    final_only: bool = True


@dataclass(frozen=True, slots=True)
class Catalogue:
    mark: str
    items: dict[str, Item]
    negative: dict[str, tuple[str, str]]  # code -> (name, reason)
    negative_loinc: frozenset[str] = frozenset()

    def item(self, code: str) -> Item | None:
        return self.items.get(code)


@dataclass(frozen=True, slots=True)
class PriorResult:
    """A result on file: a lab Observation, or an imaging/ECG study with its report."""

    id: str
    kind: str  # "lab" or "imaging"
    facility: str
    effective: str  # UTC instant
    status: str
    loinc: str | None = None
    modality: tuple[str, ...] = ()
    site_text: str = ""
    value: str | None = None


@dataclass
class Verdict:
    item: str
    name: str
    recognisable: list[dict] = field(default_factory=list)
    not_recognisable: list[dict] = field(default_factory=list)
    reason: str | None = None  # why nothing qualifies, when nothing does
    mark: str | None = None


def consortium_day(instant: str) -> date:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(CONSORTIUM_TZ
                                                                            ).date()


def valid_through(result_day: date, item: Item) -> date:
    return result_day + timedelta(days=item.validity_days)


def matches(item: Item, r: PriorResult) -> bool:
    if r.kind == "lab":
        return bool(r.loinc) and r.loinc in item.loinc
    if not set(r.modality) & set(item.modality):
        return False
    return not item.body_site or any(w.lower() in r.site_text.lower() for w in item.body_site)


def why_not(item: Item, r: PriorResult, facility: FacilityRecord | None, ordered: date
            ) -> str | None:
    """None when ``r`` may stand in for ``item`` ordered on ``ordered``; else the reason."""
    if item.final_only and r.status != "final":
        return {"amended": "the result was amended after issue",
                "corrected": "the result was corrected after issue",
                "entered-in-error": "the result was retracted (entered in error)",
                "cancelled": "the test was cancelled"}.get(
            r.status, f"the result is not final (status {r.status})")
    day = consortium_day(r.effective)
    if day > ordered:
        return "the result is dated after the order"
    if ordered > valid_through(day, item):
        return (f"expired: valid {item.validity_days} days, through "
                f"{valid_through(day, item).isoformat()}")
    if facility is None:
        return f"issuing facility {r.facility} is not in the registry"
    if item.min_tier and TIER_RANK.get(facility.tier, -1) < TIER_RANK[item.min_tier]:
        return f"{facility.id} is a {facility.tier}; the item needs {item.min_tier} or above"
    if item.eqa and not facility.eqa_valid(item.eqa, day):
        return (f"{facility.id} held no valid {item.eqa} EQA pass on the result date "
                f"{day.isoformat()}")
    return None


def check(catalogue: Catalogue, codes: Sequence[str], results: Iterable[PriorResult],
          registry: dict[str, FacilityRecord], ordered: date) -> list[Verdict]:
    """For each ordered item: the prior results that qualify (newest first), and why the
    others do not."""
    results = sorted(results, key=lambda r: r.effective, reverse=True)
    out = []
    for code in codes:
        if code in catalogue.negative:
            name, reason = catalogue.negative[code]
            out.append(Verdict(code, name, reason=f"on the negative list: {reason}"))
            continue
        item = catalogue.item(code)
        if item is None:
            out.append(Verdict(code, code, reason="not in the recognition catalogue"))
            continue
        v = Verdict(code, item.name)
        for r in results:
            if not matches(item, r):
                continue
            reason = why_not(item, r, registry.get(r.facility), ordered)
            entry = {"result": r.id, "facility": r.facility, "date":
                     consortium_day(r.effective).isoformat(), "status": r.status}
            if r.value is not None:
                entry["value"] = r.value
            if reason is None:
                fac = registry[r.facility]
                entry.update(valid_through=valid_through(consortium_day(r.effective),
                                                         item).isoformat(),
                             why=f"final result from {fac.id} ({fac.tier})"
                             + (f" with a valid {item.eqa} EQA pass on that day"
                                if item.eqa else ""),
                             saves_yuan=item.price_yuan)
                v.recognisable.append(entry)
            else:
                entry["why_not"] = reason
                v.not_recognisable.append(entry)
        if v.recognisable:
            v.mark = catalogue.mark
        elif not v.not_recognisable:
            v.reason = "no prior result for this item"
        else:
            v.reason = v.not_recognisable[0]["why_not"]
        out.append(v)
    return out
