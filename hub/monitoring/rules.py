"""Control status of a monitored resident, and what a home reading may be: pure rules.

A reading is one blood-pressure measurement (systolic/diastolic mmHg) or one glucose value
(mmol/L, fasting or not), with the time the device measured it. Status looks at the newest
readings by *measurement* time, never by arrival, so readings a meter uploads late or out of
order give the same status as readings that arrived in order.

* Uncontrolled blood pressure: at least ``bp_needed`` of the last ``bp_window`` readings at
  or above the systolic or the diastolic threshold (stricter thresholds for diabetics).
* Uncontrolled fasting glucose: the last fasting value at or above ``glucose_fasting``.
* Missing readings: an enrolled resident with no reading for ``missing_days`` days.
* Critical: one reading past the critical limits; raised at once and escalated.

Each alert carries the readings it relied on. Thresholds are examples each consortium sets
(``HUB_MONITORING_*``, see :class:`Thresholds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

BP, GLUCOSE = "bp", "glucose"
KINDS = (BP, GLUCOSE)
# Alert kinds, in the order a worklist shows them when everything else is equal.
CRITICAL, UNCONTROLLED_BP, UNCONTROLLED_GLUCOSE, MISSING = (
    "critical-reading", "uncontrolled-bp", "uncontrolled-glucose", "missing-readings")
ALERT_KINDS = (CRITICAL, UNCONTROLLED_BP, UNCONTROLLED_GLUCOSE, MISSING)
STATUSES = ("open", "acknowledged", "resolved")
STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}

# What a home meter can measure at all: outside these, the value is a device or entry error,
# not a clinical finding (refused at the gateway, dead-lettered as implausible).
PLAUSIBLE = {"sbp": (50.0, 300.0), "dbp": (20.0, 200.0), "pulse": (20.0, 250.0),
             "glucose": (0.5, 40.0)}


@dataclass(frozen=True, slots=True)
class Thresholds:
    sbp: float = 140.0
    dbp: float = 90.0
    sbp_diabetic: float = 130.0
    dbp_diabetic: float = 80.0
    bp_window: int = 5
    bp_needed: int = 3
    glucose_fasting: float = 7.0  # mmol/L
    critical_sbp: float = 180.0
    critical_dbp: float = 110.0
    critical_glucose_high: float = 16.7
    critical_glucose_low: float = 3.0
    missing_days: float = 3.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement. ``id`` is the Observation's hub id; ``time`` is RFC 3339 UTC."""

    id: str
    kind: str
    time: str
    sbp: float | None = None
    dbp: float | None = None
    glucose: float | None = None
    fasting: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    """An alert the rules call for: its kind, why in words, and the readings it relied on."""

    kind: str
    reason: str
    readings: tuple[str, ...]

    @property
    def critical(self) -> bool:
        return self.kind == CRITICAL


def implausible(values: dict[str, float | None]) -> str | None:
    """Why a reading cannot be a real measurement, or None."""
    for name, value in values.items():
        if value is None or name not in PLAUSIBLE:
            continue
        low, high = PLAUSIBLE[name]
        if not low <= value <= high:
            return f"{name} {value:g} is outside what a meter can measure ({low:g}-{high:g})"
    sbp, dbp = values.get("sbp"), values.get("dbp")
    if sbp is not None and dbp is not None and dbp >= sbp:
        return f"diastolic {dbp:g} is not below systolic {sbp:g}"
    return None


def _order(r: Reading) -> tuple[datetime, str]:
    # Ties in measurement time are broken by id, so any arrival order sorts the same.
    return _at(r.time), r.id


CONSORTIUM_TZ = ZoneInfo("Asia/Shanghai")


def _at(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    # A bare date (a resident's signing day) starts at midnight in the consortium's zone.
    return t if t.tzinfo else t.replace(tzinfo=CONSORTIUM_TZ)


def newest(readings: Iterable[Reading], kind: str, n: int) -> list[Reading]:
    """The ``n`` newest readings of ``kind`` by measurement time, newest first."""
    return sorted((r for r in readings if r.kind == kind), key=_order, reverse=True)[:n]


def bp_uncontrolled(r: Reading, diabetic: bool, th: Thresholds) -> bool:
    sbp_limit = th.sbp_diabetic if diabetic else th.sbp
    dbp_limit = th.dbp_diabetic if diabetic else th.dbp
    return (r.sbp or 0) >= sbp_limit or (r.dbp or 0) >= dbp_limit


def critical(r: Reading, th: Thresholds) -> str | None:
    """Why one reading needs a specialist now, or None."""
    if r.kind == BP:
        if (r.sbp or 0) >= th.critical_sbp or (r.dbp or 0) >= th.critical_dbp:
            return f"blood pressure {r.sbp:g}/{r.dbp:g} mmHg at or above " \
                   f"{th.critical_sbp:g}/{th.critical_dbp:g}"
        return None
    if r.glucose is not None and r.glucose >= th.critical_glucose_high:
        return f"glucose {r.glucose:g} mmol/L at or above {th.critical_glucose_high:g}"
    if r.glucose is not None and r.glucose < th.critical_glucose_low:
        return f"glucose {r.glucose:g} mmol/L below {th.critical_glucose_low:g}"
    return None


def evaluate(readings: Sequence[Reading], diabetic: bool, th: Thresholds) -> list[Finding]:
    """What the resident's readings call for now (missing readings aside: see
    :func:`missing`). The result does not depend on the order of ``readings``."""
    out: list[Finding] = []
    for kind in KINDS:
        latest = newest(readings, kind, 1)
        if latest and (why := critical(latest[0], th)):
            out.append(Finding(CRITICAL, why, (latest[0].id,)))
    window = newest(readings, BP, th.bp_window)
    high = [r for r in window if bp_uncontrolled(r, diabetic, th)]
    if len(high) >= th.bp_needed:
        limit = (f"{th.sbp_diabetic:g}/{th.dbp_diabetic:g} (diabetic)" if diabetic
                 else f"{th.sbp:g}/{th.dbp:g}")
        out.append(Finding(UNCONTROLLED_BP, f"{len(high)} of the last {len(window)} "
                           f"readings at or above {limit} mmHg",
                           tuple(r.id for r in window)))
    fasting = newest((r for r in readings if r.fasting), GLUCOSE, 1)
    if fasting and (fasting[0].glucose or 0) >= th.glucose_fasting:
        out.append(Finding(UNCONTROLLED_GLUCOSE, f"fasting glucose {fasting[0].glucose:g} "
                           f"mmol/L at or above {th.glucose_fasting:g}",
                           (fasting[0].id,)))
    return out


def missing(last_reading: str | None, enrolled: str, now: datetime, th: Thresholds
            ) -> Finding | None:
    """A missing-readings finding when nothing was measured for ``missing_days`` days
    (counted from enrolment for a resident who never sent one)."""
    since = last_reading or enrolled
    if now - _at(since) < timedelta(days=th.missing_days):
        return None
    words = f"no reading since {since}" if last_reading else f"no reading since enrolment " \
        f"({since})"
    return Finding(MISSING, f"{words}: over {th.missing_days:g} days", ())


def escalation_due(opened: str, now: datetime, sla_hours: float) -> bool:
    """An open (unacknowledged) alert past its SLA goes to the county specialist."""
    return now - _at(opened) >= timedelta(hours=sla_hours)
