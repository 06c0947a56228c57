"""Questions to the lab projection, in FHIR search terms: code, date, sort, paging."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from hub.clock import CONSORTIUM_TZ  # a date without a zone is a consortium date
from hub.lab.projection import REPORTS, RESULTS, LabProjection
from hub.lab.units import ANALYTES
from hub.store.db import Store, plain

_T = LabProjection().tables(sa.MetaData())
RES, REP = _T[RESULTS], _T[REPORTS]
PREFIXES = ("eq", "ne", "gt", "ge", "lt", "le")


class SearchError(ValueError):
    """A search parameter the lab API cannot read (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class DateBound:
    op: str  # one of >=, <, >, <=
    instant: str


def _utc(dt: datetime) -> str:
    return dt.astimezone(ZoneInfo("UTC")).isoformat(timespec="microseconds")[:26] + "Z"


def parse_date(param: str) -> list[DateBound]:
    """FHIR ``date`` search: ``ge2026-01-01``, ``lt2026-11-01T08:00:00+08:00``... A date
    without a time covers the whole consortium day."""
    prefix, value = (param[:2], param[2:]) if param[:2] in PREFIXES else ("eq", param)
    if prefix == "ne":
        raise SearchError("date: the ne prefix is not supported")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime.combine(day, time(), CONSORTIUM_TZ)
            end = start + timedelta(days=1)
        else:
            start = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if start.tzinfo is None:
                start = start.replace(tzinfo=CONSORTIUM_TZ)
            end = start + timedelta(microseconds=1)
        lo, hi = _utc(start), _utc(end)
    except (ValueError, OverflowError) as exc:  # overflow: at the ends of year 1 or 9999
        raise SearchError(f"date: {value!r} is not a FHIR date or dateTime the hub can "
                          "search by") from exc
    return {"eq": [DateBound(">=", lo), DateBound("<", hi)], "ge": [DateBound(">=", lo)],
            "gt": [DateBound(">=", hi)], "lt": [DateBound("<", lo)],
            "le": [DateBound("<", hi)]}[prefix]


def parse_codes(param: str) -> list[str]:
    """``http://loinc.org|2339-0,15074-8`` -> LOINC codes (other systems are refused)."""
    codes = []
    for token in param.split(","):
        system, _, code = token.rpartition("|")
        if system not in ("", "http://loinc.org"):
            raise SearchError(f"code: only LOINC codes are searchable here, got {system!r}")
        if code:
            codes.append(code)
    return codes


def _where(patient_keys: Sequence[str] | None, codes: Sequence[str], dates: Sequence[DateBound],
           facilities: frozenset[str] | None, excluded: Collection[str] = ()) -> list:
    where = [RES.c.visible.is_(True)]
    if excluded:  # records a patient's consent keeps the reader out of
        where.append(RES.c.patient_key.not_in(sorted(excluded)))
    if patient_keys is not None:
        where.append(RES.c.patient_key.in_(list(patient_keys)))
    if codes:
        where.append(RES.c.loinc.in_(list(codes)))
    for b in dates:
        col = RES.c.effective
        where.append({">=": col >= b.instant, "<": col < b.instant, ">": col > b.instant,
                      "<=": col <= b.instant}[b.op])
    if facilities is not None:
        where.append(sa.or_(sa.false(), *(RES.c.patient_key.startswith(f"{f}.")
                                          for f in sorted(facilities))))
    return where


def search_results(store: Store, patient_keys: Sequence[str] | None, codes: Sequence[str],
                   dates: Sequence[DateBound], newest_first: bool, count: int, offset: int,
                   facilities: frozenset[str] | None = None, excluded: Collection[str] = ()
                   ) -> tuple[int, list]:
    where = _where(patient_keys, codes, dates, facilities, excluded)
    order = (RES.c.effective.desc(), RES.c.id) if newest_first else (RES.c.effective, RES.c.id)
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(RES).where(*where)
                             ).scalar_one()
        rows = conn.execute(sa.select(RES).where(*where).order_by(*order)
                            .limit(count).offset(offset)).mappings().all()
    return total, list(rows)


def search_reports(store: Store, patient_keys: Sequence[str] | None, count: int, offset: int,
                   facilities: frozenset[str] | None = None, excluded: Collection[str] = ()
                   ) -> tuple[int, list]:
    where = [REP.c.visible.is_(True)]
    if excluded:
        where.append(REP.c.patient_key.not_in(sorted(excluded)))
    if patient_keys is not None:
        where.append(REP.c.patient_key.in_(list(patient_keys)))
    if facilities is not None:
        where.append(sa.or_(sa.false(), *(REP.c.patient_key.startswith(f"{f}.")
                                          for f in sorted(facilities))))
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(REP).where(*where)
                             ).scalar_one()
        rows = conn.execute(sa.select(REP).where(*where)
                            .order_by(REP.c.effective.desc(), REP.c.id)
                            .limit(count).offset(offset)).mappings().all()
    return total, list(rows)


def summary(store: Store, patient_keys: Sequence[str],
            facilities: frozenset[str] | None = None) -> list[dict]:
    """Per analyte: the latest visible result with a value, the number of results, and the
    trend (oldest first) in the canonical unit where the unit converts."""
    where = _where(patient_keys, (), (), facilities)
    where.append(sa.or_(RES.c.value_num.is_not(None), RES.c.value_text.is_not(None)))
    with store.connect() as conn:
        rows = conn.execute(sa.select(RES).where(*where)
                            .order_by(RES.c.analyte, RES.c.effective, RES.c.id)
                            ).mappings().all()
    by_analyte: dict[str, list] = {}
    for r in rows:
        by_analyte.setdefault(r["analyte"], []).append(r)
    order = {a.key: i for i, a in enumerate(ANALYTES)}
    out = []
    for analyte, results in sorted(by_analyte.items(),
                                   key=lambda kv: (order.get(kv[0], 99), kv[0])):
        latest = results[-1]
        out.append({
            "analyte": analyte, "display": latest["display"], "latest": plain(latest),
            "count": len(results),
            "trend": [{"effective": r["effective"],
                       "value": r["value_norm"] if r["value_norm"] is not None
                       else r["value_num"],
                       "unit": r["unit_norm"] or r["unit"], "flag": r["flag"],
                       "performer": r["performer"]} for r in results],
        })
    return out
