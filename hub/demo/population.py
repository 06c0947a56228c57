"""A deterministic simulated consortium population: FHIR R4B resources as plain JSON dicts.

Everything derives from one ``random.Random(seed)`` and a simulated clock, so a seed and a
start time replay the same stream byte for byte. Each facility publishes a Patient before
anything refers to it, and a DiagnosticReport only after the Observations it lists.

The consortium's whole day: primary care measures, townships and hospitals run labs and take
images, each study goes with a reading request (a priority) to its reading centre, whose
report comes back after a realistic turnaround; hospitals order catalogue items
(ServiceRequests coded with the recognition catalogue's item codes) for patients with recent
results, here or at a referring facility. ``live_from`` splits the story: before it (the
history) the simulator plays the reading centres and the ordering doctors' follow-up itself;
from it on, the demo's readers and doctors do that through the hub's API
(``reading_report``, ``fulfil``). ``snapshot()``/``state=`` carry the population across
runs, so a second demo continues the story with new ids instead of replaying it.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from hub import clock
from hub.clock import CONSORTIUM_TZ

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"
NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
ITEM_SYSTEM = "urn:hie:recognition:item"  # recognition catalogue item codes
REFERRED_SHARE = 0.25  # new patients who are already known at another member facility
DICOM_UID_SYSTEM = "urn:dicom:uid"
DICOM_ROOT = "1.2.826.0.1.3680043.8.498."  # UUID-derived root: free to use, no registration
# A fixed instant for reproducible streams (benchmarks, the patient-index quality figures);
# the demo anchors its population to the hub's clock instead (``start``).
START = datetime(2026, 11, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))
HISTORY = timedelta(days=14)  # how far back the demo back-fills its story

REVISION_SHARE = 0.03  # share of events that are a new version of an earlier resource
ERROR_SHARE = 0.005  # part of REVISION_SHARE that retracts an Observation
MAX_REMEMBERED = 300  # per facility; bounds memory in long demo runs
RESULTS_REMEMBERED = 12  # per resident: what an ordering doctor may find on file
HISTORY_RETEST_SHARE = 0.35  # in the history, orders the doctor had tested again
AMENDED_REPORT_SHARE = 0.04
# The reading centres' backlog: routine studies of the last days still unread at "now", some
# of them past their SLA (the worklist shows both).
BACKLOG_SHARE, BACKLOG_DAYS = 0.25, timedelta(days=3)

# How often a facility of each tier publishes, relative to a village clinic.
TIER_RATE = {"village-clinic": 1, "community-centre": 2, "township-centre": 2,
             "county-hospital": 4, "city-hospital": 5}
_PRIMARY = {"bp": 45, "hr": 14, "weight": 12, "capglu": 29}
TIER_MIX: dict[str, dict[str, int]] = {
    "village-clinic": _PRIMARY,
    "community-centre": {**_PRIMARY, "lab": 10},
    "township-centre": {"bp": 25, "hr": 8, "weight": 7, "capglu": 15, "lab": 15, "panel": 12,
                        "imaging": 18},
    "county-hospital": {"bp": 12, "hr": 4, "weight": 4, "panel": 40, "imaging": 20,
                        "order": 25},
    "city-hospital": {"bp": 10, "hr": 3, "weight": 3, "panel": 42, "imaging": 22, "order": 25},
}
SINGLE_LABS = {"community-centre": ("15074-8", "14647-2", "4548-4"),
               "township-centre": ("15074-8", "4548-4", "718-7", "14682-9")}
# Repeats weight the choice: metabolic panels and CT dominate hospital work.
_HOSPITAL = {"panel": ("24323-8", "24323-8", "58410-2", "58410-2", "24331-1", "55399-0"),
             "imaging": ("CT", "CT", "CT", "MR", "MR", "CR", "CR", "US", "US")}
ORDERS = {"township-centre": {"panel": ("58410-2", "55399-0"),
                              "imaging": ("US", "US", "DX", "DX", "ECG")},
          "county-hospital": _HOSPITAL, "city-hospital": _HOSPITAL}


@dataclass(frozen=True)
class Analyte:
    code: str
    display: str
    ucum: str
    unit: str
    low: float
    high: float
    decimals: int
    p_high: float  # share of results above the range, so dashboards have something to flag
    p_low: float
    spread: float  # how far above the range high results reach, as a multiple of the limit
    male: tuple[float, float] | None = None  # sex-specific range where Chinese norms differ


ANALYTES = {a.code: a for a in (
    # LOINC codes for the molar units these analytes are reported in here (mmol/L, µmol/L).
    Analyte("15074-8", "Glucose", "mmol/L", "mmol/L", 3.9, 6.1, 1, 0.25, 0.03, 2.4),
    Analyte("4548-4", "Hemoglobin A1c", "%", "%", 4.0, 6.0, 1, 0.25, 0.0, 1.8),
    Analyte("14682-9", "Creatinine", "umol/L", "μmol/L", 41, 81, 0, 0.12, 0.03, 3.0, (57, 111)),
    Analyte("1742-6", "ALT", "U/L", "U/L", 7, 40, 0, 0.12, 0.0, 4.0),
    Analyte("718-7", "Hemoglobin", "g/L", "g/L", 115, 150, 0, 0.04, 0.15, 1.1, (130, 175)),
    Analyte("2823-3", "Potassium", "mmol/L", "mmol/L", 3.5, 5.3, 1, 0.05, 0.06, 1.3),
    Analyte("14647-2", "Total cholesterol", "mmol/L", "mmol/L", 2.8, 5.2, 2, 0.3, 0.0, 1.6),
    Analyte("6690-2", "WBC", "10*9/L", "10^9/L", 3.5, 9.5, 1, 0.08, 0.05, 2.0),
    Analyte("777-3", "Platelets", "10*9/L", "10^9/L", 125, 350, 0, 0.04, 0.05, 1.5),
)}
PANELS = {
    "24323-8": ("Comprehensive metabolic panel", ("15074-8", "14682-9", "1742-6", "2823-3")),
    "58410-2": ("CBC panel - Blood by Automated count", ("718-7", "6690-2", "777-3")),
    "24331-1": ("Lipid panel", ("14647-2",)),
    "55399-0": ("Diabetes tracking panel", ("15074-8", "4548-4")),
}
SITES = {"chest": ("51185008", "Thoracic structure"), "head": ("69536005", "Head structure"),
         "abdomen": ("818983003", "Abdomen structure"), "brain": ("12738006", "Brain structure"),
         "knee": ("72696002", "Knee region structure"), "heart": ("80891009", "Heart structure"),
         "lumbar": ("122496007", "Lumbar spine structure"),
         "liver": ("10200004", "Liver structure"), "thyroid": ("69748006", "Thyroid structure")}
# modality: display, series per study, instances per series, (body site, 检查描述) choices
MODALITIES: dict[str, tuple[str, tuple[int, int], tuple[int, int], tuple[tuple[str, str], ...]]] = {
    "CT": ("Computed Tomography", (2, 5), (80, 400),
           (("chest", "胸部CT平扫"), ("head", "头颅CT平扫"), ("abdomen", "上腹部CT增强"))),
    "MR": ("Magnetic Resonance", (3, 8), (18, 40),
           (("brain", "头颅MR平扫"), ("knee", "膝关节MR平扫"), ("lumbar", "腰椎MR平扫"))),
    "CR": ("Computed Radiography", (1, 2), (1, 2),
           (("chest", "胸部正位片"), ("knee", "膝关节正侧位片"))),
    "DX": ("Digital Radiography", (1, 2), (1, 2),
           (("chest", "胸部正位片"), ("lumbar", "腰椎正侧位片"))),
    "US": ("Ultrasound", (1, 1), (8, 60),
           (("liver", "肝胆胰脾超声"), ("thyroid", "甲状腺超声"), ("heart", "超声心动图"))),
    "ECG": ("Electrocardiography", (1, 1), (1, 1), (("heart", "十二导联心电图"),)),
}
# Surnames repeated roughly by frequency in the national census.
SURNAMES = "王王王李李李张张张刘刘陈陈杨杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
# Given names follow generation fashions: (born before 1970, 1970-1994, 1995 on).
GIVEN = {
    "female": (("秀英", "桂英", "秀兰", "玉兰", "凤英", "玉珍", "淑珍", "桂兰", "秀珍"),
               ("丽", "敏", "静", "婷", "芳", "娟", "霞", "燕", "红", "艳", "丽娟", "海燕"),
               ("欣怡", "梓涵", "雨桐", "子涵", "诗涵", "一诺", "可馨", "思雨")),
    "male": (("建国", "建华", "国强", "志强", "德明", "永明", "福生", "金林", "根生"),
             ("伟", "磊", "强", "勇", "军", "杰", "涛", "斌", "超", "鹏", "刚", "海峰"),
             ("子轩", "浩然", "宇轩", "梓豪", "俊杰", "浩宇", "一鸣", "宇航")),
}
# (GB/T 2260 code, city, district) of a county-led consortium around Hangzhou.
REGIONS = (("330102", "杭州市", "上城区"), ("330105", "杭州市", "拱墅区"),
           ("330106", "杭州市", "西湖区"), ("330108", "杭州市", "滨江区"),
           ("330110", "杭州市", "余杭区"), ("330122", "杭州市", "桐庐县"),
           ("330127", "杭州市", "淳安县"), ("330182", "杭州市", "建德市"))
MIGRANT_REGIONS = ("341221", "411722", "510722")  # people born in other provinces
STREETS = ("文三路", "解放路", "延安路", "人民路", "建设路", "新华路", "环城东路", "中山北路")
MOBILE_PREFIXES = ("138", "139", "135", "136", "150", "151", "158", "186", "187", "188", "199")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def gb11643_check(body17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits of a citizen ID."""
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, _ID_WEIGHTS, strict=True)) % 11]


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def _qty(value: float, ucum: str, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _interpret(value: float, low: float, high: float) -> list[dict[str, Any]]:
    code, text = ("L", "Low") if value < low else ("H", "High") if value > high else ("N", "Normal")
    return [{"coding": [_coding(INTERPRETATION, code, text)]}]


VITALS = _coding(OBS_CATEGORY, "vital-signs", "Vital Signs")
LABORATORY = _coding(OBS_CATEGORY, "laboratory", "Laboratory")


# Recognition catalogue items (schemas/recognition-catalogue.yaml) the simulated facilities
# produce results for: name, validity in days (as in the example catalogue), and the LOINC
# code of the analyte, or the modality and body site of the study.
ITEMS: dict[str, tuple[str, int, str | tuple[str, str]]] = {
    "GLU": ("葡萄糖", 7, "15074-8"), "HBA1C": ("糖化血红蛋白", 90, "4548-4"),
    "CREA": ("肌酐", 14, "14682-9"), "ALT": ("丙氨酸氨基转移酶", 14, "1742-6"),
    "HGB": ("血红蛋白", 7, "718-7"), "K": ("钾", 3, "2823-3"),
    "TC": ("总胆固醇", 30, "14647-2"), "WBC": ("白细胞计数", 7, "6690-2"),
    "PLT": ("血小板计数", 7, "777-3"),
    "CT-HEAD": ("头颅CT平扫", 30, ("CT", "head")), "CT-CHEST": ("胸部CT平扫", 30, ("CT", "chest")),
    "MR-HEAD": ("头颅MRI平扫", 60, ("MR", "brain")),
    "XR-CHEST": ("胸部X线摄影", 90, ("DX", "chest")),
    "US-ABD": ("腹部超声", 30, ("US", "liver")),
    "ECG-12": ("常规十二导联心电图", 7, ("ECG", "heart")),
}
ITEM_OF_LOINC = {spec: code for code, (_, _, spec) in ITEMS.items() if isinstance(spec, str)}
ITEM_OF_STUDY = {spec: code for code, (_, _, spec) in ITEMS.items() if isinstance(spec, tuple)}
ITEM_OF_STUDY[("CR", "chest")] = "XR-CHEST"
# Reading requests: how urgent the acquiring facility says a study is (FHIR request priority),
# how many minutes after acquisition the study is sent, and how long a reading centre then
# takes, from acquisition to report (median minutes and log-normal spread; the SLA targets
# are stat 30, asap 60, urgent 120, routine 24 h).
PRIORITY_WEIGHTS = {"imaging": {"stat": 5, "asap": 10, "urgent": 20, "routine": 65},
                    "ecg": {"stat": 20, "asap": 20, "urgent": 30, "routine": 30}}
UPLOAD_DELAY = {"stat": (2, 8), "asap": (3, 15), "urgent": (5, 30), "routine": (15, 90)}
TURNAROUND = {"stat": (18, 0.45), "asap": (40, 0.4), "urgent": (75, 0.4), "routine": (360, 0.9)}
NORMAL = ("17621005", "Normal")
# modality: (conclusion, SNOMED finding) choices; the first is the normal finding.
CONCLUSIONS: dict[str, tuple[tuple[str, tuple[str, str]], ...]] = {
    "CT": (("未见明显异常", NORMAL), ("右肺上叶小结节，建议3个月后复查CT",
                                 ("427359005", "Solitary nodule of lung")),
           ("双侧基底节区腔隙性脑梗死", ("230698000", "Lacunar infarction")),
           ("右肺下叶炎症", ("233604007", "Pneumonia"))),
    "MR": (("未见明显异常", NORMAL), ("脑内多发腔隙灶", ("230698000", "Lacunar infarction")),
           ("L4/5椎间盘突出", ("76107001", "Prolapsed lumbar intervertebral disc")),
           ("膝关节退行性变", ("239873007", "Osteoarthritis of knee"))),
    "CR": (("心肺膈未见明显异常", NORMAL),
           ("右下肺纹理增多，考虑炎症", ("233604007", "Pneumonia"))),
    "US": (("肝胆胰脾未见明显异常", NORMAL),
           ("脂肪肝（轻度）", ("197321007", "Steatosis of liver")),
           ("胆囊结石", ("235919008", "Gallstone")),
           ("甲状腺结节（TI-RADS 3类）", ("237495005", "Thyroid nodule"))),
    "ECG": (("窦性心律，正常心电图", ("426783006", "Sinus rhythm")),
            ("窦性心动过速", ("11092001", "Sinus tachycardia")),
            ("心房颤动", ("49436004", "Atrial fibrillation"))),
}
CONCLUSIONS["DX"] = CONCLUSIONS["CR"]
READERS = {"city-1": ("陈医生", "赵医生"), "county-1": ("王医生", "李医生")}


@dataclass(frozen=True)
class SimFacility:
    id: str
    tier: str
    # service (imaging, ecg, pathology) -> the facility that reads this one's studies
    reading_centres: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass
class _Facility:
    """What one facility has published so far, as far as later events need to know."""

    spec: SimFacility
    counters: dict[str, int] = field(default_factory=dict)
    patients: dict[str, dict] = field(default_factory=dict)
    observations: dict[str, dict] = field(default_factory=dict)

    def next_id(self, prefix: str) -> str:
        n = self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}-{n:06d}"


def iso(when: datetime) -> str:
    """An instant as the consortium's facilities write it: Asia/Shanghai offset."""
    local = when.astimezone(CONSORTIUM_TZ)
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def order_items(resource: dict) -> list[str]:
    """The catalogue items an order (ServiceRequest) names with ``urn:hie:recognition:item``."""
    if resource.get("resourceType") != "ServiceRequest":
        return []
    return [c["code"] for c in (resource.get("code") or {}).get("coding") or ()
            if c.get("system") == ITEM_SYSTEM and c.get("code")]


def _ref(rtype: str, hub_id: str, sender: str) -> str:
    """A reference as ``sender`` writes it: its own resources by local id, others' by hub id."""
    owner, _, local = hub_id.partition(".")
    return f"{rtype}/{local if owner == sender else hub_id}"


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def history_times(now: datetime, events: int, since: datetime | None = None
                  ) -> list[datetime]:
    """Stamps for back-filling the story up to ``now``: ``events`` spread evenly over the
    last :data:`HISTORY`, or proportionally fewer from ``since`` (where an earlier run left
    off) when that is more recent."""
    begin = now - HISTORY if since is None else max(now - HISTORY, since)
    if begin >= now or events <= 0:
        return []
    n = max(1, round(events * ((now - begin) / HISTORY)))
    return [begin + (now - begin) * (i + 1) / n for i in range(n)]


def anchored(facilities: list[SimFacility], seed: int, history_events: int,
             state: dict | None = None, now: datetime | None = None
             ) -> tuple[PopulationSimulator, list[datetime]]:
    """A population living at ``now`` (default: the hub's clock) and the stamps of the
    history to back-fill first; with ``state``, the story continues where it stopped."""
    now = now or clock.now()
    since = datetime.fromisoformat(state["now"]) if state and state.get("now") else None
    times = history_times(now, history_events, since)
    sim = PopulationSimulator(facilities, seed, start=times[0] if times else now,
                              live_from=now, state=state)
    return sim, times


class PopulationSimulator:
    """Yields ``(facility_id, resource)`` events; the dicts returned are the caller's to keep.

    ``start`` is the simulated clock's first instant (default :data:`START`); each event moves
    it 1-5 s on, or to ``at`` when :meth:`next_event` is given one. ``live_from``: from that
    instant on the simulator leaves reading and ordering decisions to the caller (see the
    module's docstring). ``state`` is a :meth:`snapshot` of an earlier run to continue.
    """

    def __init__(self, facilities: list[SimFacility], seed: int = 7,
                 start: datetime | None = None, live_from: datetime | None = None,
                 state: dict | None = None) -> None:
        unknown = sorted({f.tier for f in facilities} - TIER_RATE.keys())
        if not facilities or unknown:
            raise ValueError(f"need at least one facility, all of known tiers; unknown: {unknown}")
        self._rng = random.Random(seed)
        self._facilities = [_Facility(f) for f in facilities]
        self._by_id = {f.spec.id: f for f in self._facilities}
        self._weights = [TIER_RATE[f.tier] for f in facilities]
        self._now = (start or START).astimezone(CONSORTIUM_TZ)
        self._live_from = live_from
        self._queue: deque[tuple[_Facility, dict]] = deque()
        # Events due later (reports, results of a test ordered earlier): (due, n, facility, res)
        self._timed: list[tuple[datetime, int, _Facility, dict]] = []
        self._timed_n = 0
        # Residents: each facility record ("fid.pid") belongs to one person, whose recent
        # results (catalogue item, effective time) an ordering doctor may find.
        self._person: dict[str, str] = {}
        self._results: dict[str, deque[tuple[str, datetime]]] = {}
        if state:
            self._restore(state)

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def live(self) -> bool:
        return self._live_from is not None and self._now >= self._live_from

    def next_event(self, at: datetime | None = None) -> tuple[str, dict]:
        """Return (facility_id, resource) for the next thing a facility publishes, stamped
        ``at`` (or 1-5 s after the previous event); stamps always move forward."""
        rng = self._rng
        step = timedelta(seconds=rng.randint(1, 5))
        if at is None:
            self._now += step
        else:
            at = at.astimezone(CONSORTIUM_TZ)
            at = at.replace(microsecond=at.microsecond // 1000 * 1000)
            self._now = max(at, self._now + timedelta(milliseconds=1))
        r = rng.random()
        event = None
        # What is due goes out between plans, so it never overtakes what it refers to.
        if not self._queue and self._timed and self._timed[0][0] <= self._now:
            _, _, fac, res = heapq.heappop(self._timed)
            event = (fac, res)
        elif r < REVISION_SHARE:
            event = self._revise(retract=r < ERROR_SHARE)
        if event is None:
            if not self._queue:
                self._plan()
            event = self._queue.popleft()
        fac, res = event
        res["meta"]["lastUpdated"] = iso(self._now)
        self._remember(fac, res)
        return fac.spec.id, res

    # --- across runs ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON: what a later run needs to continue (ids, patients, their results)."""
        records = {f"{f.spec.id}.{pid}" for f in self._facilities for pid in f.patients}
        persons = {k: p for k, p in self._person.items() if k in records}
        return {
            "version": 1, "now": iso(self._now),
            "facilities": {f.spec.id: {"counters": dict(f.counters),
                                       "patients": list(f.patients.values())}
                           for f in self._facilities},
            "persons": persons,
            "results": {p: [[item, iso(when)] for item, when in self._results[p]]
                        for p in sorted(set(persons.values())) if p in self._results},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown population state version {state.get('version')!r}")
        for fid, saved in state.get("facilities", {}).items():
            fac = self._by_id.get(fid)
            if fac is None:
                continue  # the facility left the consortium
            for prefix, n in saved.get("counters", {}).items():
                fac.counters[prefix] = max(fac.counters.get(prefix, 0), int(n))
            fac.patients.update((p["id"], p) for p in saved.get("patients", ()))
        self._person.update(state.get("persons", {}))
        for person, rows in state.get("results", {}).items():
            self._results[person] = deque(
                ((item, datetime.fromisoformat(when)) for item, when in rows),
                maxlen=RESULTS_REMEMBERED)
        if state.get("now"):
            self._now = max(self._now, datetime.fromisoformat(state["now"]).astimezone(
                CONSORTIUM_TZ) + timedelta(seconds=1))

    def busiest_patient(self, facility_ids: tuple[str, ...]) -> str | None:
        """The hub id of a remembered patient of these facilities with the most results on
        file (for a hint that shows something)."""
        best, most = None, 0
        for fid in facility_ids:
            fac = self._by_id.get(fid)
            for pid in fac.patients if fac else ():
                n = len(self._results.get(self._person.get(f"{fid}.{pid}", ""), ()))
                if n > most:
                    best, most = f"{fid}.{pid}", n
        return best

    def reserve_ids(self, facility_id: str, prefix: str, used: int) -> None:
        """Never hand out ``<prefix>-n`` for n <= ``used`` at this facility (ids already in
        the hub's store from an earlier run)."""
        fac = self._by_id.get(facility_id)
        if fac is not None:
            fac.counters[prefix] = max(fac.counters.get(prefix, 0), used)

    def patient_with_results(self, facility_id: str, rng: random.Random
                             ) -> tuple[str, list[str]] | None:
        """A remembered patient of the facility, and ids of its observations on file (the
        evidence a referral attaches); None if the facility has published no patient."""
        fac = self._by_id.get(facility_id)
        if fac is None or not fac.patients:
            return None
        pid = rng.choice(sorted(fac.patients))
        mine = [oid for oid, obs in fac.observations.items()
                if obs.get("subject", {}).get("reference") == f"Patient/{pid}"]
        return pid, mine[-3:]

    def new_id(self, facility_id: str, prefix: str) -> str:
        """A fresh ``<prefix>-n`` of the facility (never one an earlier run used)."""
        return self._by_id[facility_id].next_id(prefix)

    # --- what the demo's readers and doctors ask for ------------------------------------

    def reading_report(self, centre_id: str, study_id: str, patient_key: str, modality: str,
                       description: str | None, started: str | None, issued: datetime,
                       reader: str | None = None, rng: random.Random | None = None) -> dict:
        """A reading centre's report on another facility's study, named by hub ids
        (``township-1.img-000001``, ``township-1.p-000001``)."""
        rng = rng or self._rng
        centre = self._by_id[centre_id]
        mod = modality.split(",")[0]
        choices = CONCLUSIONS.get(mod, CONCLUSIONS["CT"])
        text, (code, display) = choices[0] if rng.random() < 0.55 else rng.choice(choices)
        ecg = mod == "ECG"
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport", "id": centre.next_id("rep"),
            "meta": {"versionId": "1", "lastUpdated": iso(issued)}, "status": "final",
            "category": [{"coding": [_coding(REPORT_CATEGORY, *(
                ("EC", "Electrocardiac") if ecg else ("RAD", "Radiology")))]}],
            "code": {"coding": [_coding(LOINC, *(("11524-6", "EKG study") if ecg else (
                "18748-4", "Diagnostic imaging study")))], "text": description or mod},
            "subject": {"reference": _ref("Patient", patient_key, centre_id)},
            "imagingStudy": [{"reference": _ref("ImagingStudy", study_id, centre_id)}],
            "issued": iso(issued),
            "performer": [{"reference": f"Organization/{centre_id}"}],
            "conclusion": text,
            "conclusionCode": [{"coding": [_coding(SNOMED, code, display)]}]}
        if started:
            report["effectiveDateTime"] = iso(datetime.fromisoformat(
                started.replace("Z", "+00:00")))
        readers = READERS.get(centre_id) or (f"{centre_id} 医生",)
        report["resultsInterpreter"] = [{"display": reader or rng.choice(readers)}]
        return report

    def amendment(self, report: dict, issued: datetime, rng: random.Random | None = None
                  ) -> dict:
        """The next version of a report: amended, with another conclusion."""
        rng = rng or self._rng
        new = copy.deepcopy(report)
        choices = next((c for c in CONCLUSIONS.values()
                        if any(text == new["conclusion"] for text, _ in c)), CONCLUSIONS["CT"])
        others = [c for c in choices if c[0] != new["conclusion"]]
        text, (code, display) = rng.choice(others)
        new.update(status="amended", conclusion=f"{text}（复核更正）", issued=iso(issued),
                   conclusionCode=[{"coding": [_coding(SNOMED, code, display)]}])
        new["meta"] = {"versionId": str(int(report["meta"]["versionId"]) + 1),
                       "lastUpdated": iso(issued)}
        return new

    def fulfil(self, facility_id: str, patient_id: str, item: str) -> bool:
        """The ordering doctor had the item tested again: its result follows in 20-90 s."""
        fac = self._by_id.get(facility_id)
        patient = fac.patients.get(patient_id) if fac else None
        if fac is None or patient is None or item not in ITEMS:
            return False
        self._test(fac, patient, item,
                   self._now + timedelta(seconds=self._rng.randint(20, 90)))
        return True

    # --- the story -----------------------------------------------------------------------

    def _remember(self, fac: _Facility, res: dict) -> None:
        # Copies, so a caller that edits what it got cannot corrupt later versions.
        store = {"Patient": fac.patients, "Observation": fac.observations}.get(res["resourceType"])
        if store is None or res.get("status") == "entered-in-error":
            return
        store[res["id"]] = copy.deepcopy(res)
        if len(store) > MAX_REMEMBERED:
            del store[next(iter(store))]  # oldest first: recent results are what gets amended

    def _push(self, due: datetime, fac: _Facility, res: dict) -> None:
        self._timed_n += 1
        heapq.heappush(self._timed, (due, self._timed_n, fac, res))

    def _revise(self, retract: bool) -> tuple[_Facility, dict] | None:
        rng = self._rng
        # Only facilities with results to revise, so the share holds from the first minutes on.
        ready = [(f, w) for f, w in zip(self._facilities, self._weights, strict=True)
                 if f.observations]
        if not ready:
            return None
        fac = rng.choices([f for f, _ in ready], [w for _, w in ready])[0]
        if not retract and fac.patients and rng.random() < 0.2:
            res = copy.deepcopy(fac.patients[rng.choice(list(fac.patients))])
            res["telecom"] = [self._phone()]  # the usual correction: a new mobile number
        else:
            oid = rng.choice(list(fac.observations))
            res = copy.deepcopy(fac.observations[oid])
            if retract:
                res["status"] = "entered-in-error"
                del fac.observations[oid]  # nothing amends a retracted result
            else:
                res["status"] = "final" if res["status"] == "preliminary" else rng.choice(
                    ("amended", "corrected"))
                self._change_value(res)
                res["note"] = [{"text": "复核后修改结果"}]
        res["meta"] = {"versionId": str(int(res["meta"]["versionId"]) + 1)}
        return fac, res

    def _change_value(self, obs: dict) -> None:
        for holder in [obs, *obs.get("component", [])]:
            q = holder.get("valueQuantity")
            if q is None:
                continue
            v, sign = q["value"], self._rng.choice((-1, 1))
            places = 0 if isinstance(v, int) else len(repr(v).split(".")[1])
            new = _round(v * (1 + sign * self._rng.uniform(0.03, 0.12)), places)
            if new == v or new <= 0:  # rounding must not hide the correction
                new = _round(v + 10 ** -places, places)
            q["value"] = new
        if obs.get("referenceRange"):
            rr = obs["referenceRange"][0]
            obs["interpretation"] = _interpret(obs["valueQuantity"]["value"],
                                               rr["low"]["value"], rr["high"]["value"])

    def _plan(self) -> None:
        rng = self._rng
        fac = rng.choices(self._facilities, self._weights)[0]
        n = len(fac.patients)
        if n == 0 or rng.random() < (0.3 if n < 20 else 0.08):
            patient = self._patient(fac)
            self._queue.append((fac, patient))
        else:
            patient = fac.patients[rng.choice(list(fac.patients))]
        mix = TIER_MIX[fac.spec.tier]
        kind = rng.choices(list(mix), list(mix.values()))[0]
        tier = fac.spec.tier
        if kind == "order" and self._order(fac):
            return
        if kind in ("panel", "order"):  # nobody with recent results to order for: a panel
            self._panel(fac, patient, rng.choice(ORDERS[tier]["panel"]))
        elif kind == "imaging":
            self._imaging(fac, patient, rng.choice(ORDERS[tier]["imaging"]))
        elif kind == "lab":
            analyte = ANALYTES[rng.choice(SINGLE_LABS[tier])]
            self._queue.append((fac, self._lab(fac, patient, analyte, self._past(20, 240))))
        elif kind == "capglu":  # fingerstick, read at the bedside
            glucose = ANALYTES["15074-8"]
            self._queue.append((fac, self._lab(fac, patient, glucose, self._past(0, 9))))
        else:
            self._queue.append((fac, self._vital(fac, patient, kind)))

    def _past(self, lo_min: int, hi_min: int, before: datetime | None = None) -> str:
        return iso((before or self._now) - timedelta(minutes=self._rng.randint(lo_min, hi_min)))

    def _phone(self) -> dict[str, Any]:
        number = self._rng.choice(MOBILE_PREFIXES) + f"{self._rng.randrange(10**8):08d}"
        return {"system": "phone", "value": number, "use": "mobile"}

    def _patient(self, fac: _Facility) -> dict:
        rng = self._rng
        # Residents move between tiers (referred up, sent back down): some new patients are
        # people another member already knows, so the patient index has links to make.
        known = [f for f in self._facilities if f is not fac and f.patients]
        if known and rng.random() < REFERRED_SHARE:
            return self._referred(fac, rng.choice(known))
        gender = rng.choice(("male", "female"))
        age = 1 + round(94 * rng.betavariate(2.0, 1.3))  # consortium patients skew old
        # Any birthday from a year before today - age years up to that day itself.
        birth = _years_before(self._now.date(), age) - timedelta(days=rng.randrange(365))
        generation = 0 if birth.year < 1970 else 1 if birth.year < 1995 else 2
        family, given = rng.choice(SURNAMES), rng.choice(GIVEN[gender][generation])
        region, city, district = rng.choice(REGIONS)
        pid = fac.next_id("p")
        identifiers = [{"use": "usual", "type": {"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number")]},
            "system": f"urn:hie:facility:{fac.spec.id}:mrn", "value": f"MRN{int(pid[2:]):05d}"}]
        res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
                               "identifier": identifiers}
        if rng.random() < 0.8:
            born_in = region if rng.random() < 0.85 else rng.choice(MIGRANT_REGIONS)
            seq = rng.randrange(1, 500) * 2 + (gender == "male")  # odd 17th digit for men
            body = f"{born_in}{birth:%Y%m%d}{seq:03d}"
            identifiers.append({"use": "official", "system": NATIONAL_ID_SYSTEM,
                                "value": body + gb11643_check(body)})
            res["telecom"] = [self._phone()]
        line = f"{rng.choice(STREETS)}{rng.randint(1, 399)}号"
        res.update({
            "name": [{"use": "official", "text": family + given, "family": family,
                      "given": [given]}],
            "gender": gender, "birthDate": birth.isoformat(),
            "address": [{"use": "home", "text": f"浙江省{city}{district}{line}", "line": [line],
                         "city": city, "district": district, "state": "浙江省",
                         "country": "CN"}],
        })
        key = f"{fac.spec.id}.{pid}"
        self._person[key] = key
        return res

    def _referred(self, fac: _Facility, origin: _Facility) -> dict:
        """A resident of ``origin`` registered anew at ``fac``: its own id and MRN, the same
        person; the clerk may not have taken the national ID (as often happens)."""
        rng = self._rng
        src = origin.patients[rng.choice(list(origin.patients))]
        pid = fac.next_id("p")
        identifiers = [{"use": "usual", "type": {"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number")]},
            "system": f"urn:hie:facility:{fac.spec.id}:mrn", "value": f"MRN{int(pid[2:]):05d}"}]
        identifiers += [dict(i) for i in src["identifier"]
                        if i.get("system") == NATIONAL_ID_SYSTEM and rng.random() < 0.75]
        res = {"resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
               "identifier": identifiers}
        for k in ("name", "gender", "birthDate", "address", "telecom"):
            if k in src:
                res[k] = copy.deepcopy(src[k])
        origin_key = f"{origin.spec.id}.{src['id']}"
        self._person[f"{fac.spec.id}.{pid}"] = self._person.get(origin_key, origin_key)
        return res

    def _on_file(self, fac: _Facility, patient: dict, item: str | None, when: str) -> None:
        """Remember a catalogue item's result for the patient's person (for later orders)."""
        if item is None:
            return
        key = f"{fac.spec.id}.{patient['id']}"
        person = self._person.setdefault(key, key)
        self._results.setdefault(person, deque(maxlen=RESULTS_REMEMBERED)).append(
            (item, datetime.fromisoformat(when)))

    def _observation(self, fac: _Facility, patient: dict, code: str, display: str,
                     category: dict, when: str) -> dict[str, Any]:
        status = "preliminary" if self._rng.random() < 0.03 else "final"
        return {"resourceType": "Observation", "id": fac.next_id("obs"),
                "meta": {"versionId": "1"}, "status": status,
                "category": [{"coding": [dict(category)]}],  # never share the constant
                "code": {"coding": [_coding(LOINC, code, display)], "text": display},
                "subject": {"reference": f"Patient/{patient['id']}"},
                "effectiveDateTime": when,
                "performer": [{"reference": f"Organization/{fac.spec.id}"}]}

    def _lab(self, fac: _Facility, patient: dict, a: Analyte, when: str) -> dict:
        rng = self._rng
        low, high = a.male if a.male and patient["gender"] == "male" else (a.low, a.high)
        r = rng.random()
        if r < a.p_high:
            value = rng.uniform(high, high * a.spread)
        elif r < a.p_high + a.p_low:
            value = rng.uniform(low * 0.7, low)
        else:
            value = min(high, max(low, rng.gauss((low + high) / 2, (high - low) / 5)))
        value = _round(value, a.decimals)
        obs = self._observation(fac, patient, a.code, a.display, LABORATORY, when)
        obs["valueQuantity"] = _qty(value, a.ucum, a.unit)
        obs["interpretation"] = _interpret(value, low, high)
        obs["referenceRange"] = [{"low": _qty(low, a.ucum, a.unit),
                                  "high": _qty(high, a.ucum, a.unit)}]
        self._on_file(fac, patient, ITEM_OF_LOINC.get(a.code), when)
        return obs

    def _vital(self, fac: _Facility, patient: dict, kind: str) -> dict:
        rng, when = self._rng, self._past(0, 5)
        age = self._now.year - int(patient["birthDate"][:4])
        if kind == "bp":
            sys_ = round(min(210, max(85, 108 + 0.55 * max(0, age - 30) + rng.gauss(0, 13))))
            dia = round(min(125, sys_ - 20, max(50, sys_ * 0.6 + rng.gauss(0, 7))))
            obs = self._observation(fac, patient, "85354-9", "Blood pressure panel", VITALS, when)
            obs["component"] = [
                {"code": {"coding": [_coding(LOINC, c, d)]},
                 "valueQuantity": _qty(v, "mm[Hg]", "mmHg")}
                for c, d, v in (("8480-6", "Systolic blood pressure", sys_),
                                ("8462-4", "Diastolic blood pressure", dia))]
            return obs
        if kind == "hr":
            obs = self._observation(fac, patient, "8867-4", "Heart rate", VITALS, when)
            rate = rng.gauss(76 + (20 if age < 12 else 0), 11)
            obs["valueQuantity"] = _qty(round(min(150, max(45, rate))), "/min", "beats/minute")
            return obs
        adult = 70.0 if patient["gender"] == "male" else 58.0
        kg = 8 + 2.6 * age + rng.gauss(0, 3) if age < 16 else rng.gauss(adult, 10)
        obs = self._observation(fac, patient, "29463-7", "Body weight", VITALS, when)
        obs["valueQuantity"] = _qty(round(max(8.0, kg), 1), "kg", "kg")
        return obs

    def _panel(self, fac: _Facility, patient: dict, code: str) -> None:
        display, members = PANELS[code]
        collected = self._past(60, 240)
        results = [self._lab(fac, patient, ANALYTES[c], collected) for c in members]
        self._queue.extend((fac, o) for o in results)  # results go out before their report
        self._queue.append((fac, {
            "resourceType": "DiagnosticReport", "id": fac.next_id("dr"),
            "meta": {"versionId": "1"},
            "status": "partial" if any(o["status"] == "preliminary" for o in results) else "final",
            "category": [{"coding": [_coding(REPORT_CATEGORY, "LAB", "Laboratory")]}],
            "code": {"coding": [_coding(LOINC, code, display)], "text": display},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "effectiveDateTime": collected, "issued": iso(self._now),
            "performer": [{"reference": f"Organization/{fac.spec.id}"}],
            "result": [{"reference": f"Observation/{o['id']}"} for o in results]}))

    def _imaging(self, fac: _Facility, patient: dict, modality: str, site: str | None = None,
                 at: datetime | None = None) -> None:
        """A study, its reading request, and (in the history) the reading centre's report;
        published now, or at ``at`` (a study ordered earlier)."""
        rng = self._rng
        display, (s_lo, s_hi), (i_lo, i_hi), sites = MODALITIES[modality]
        if site is None:
            site, description = rng.choice(sites)
        else:
            description = next(d for s, d in sites if s == site)
        study_uid = f"{DICOM_ROOT}{rng.getrandbits(80)}"  # <= 52 chars, DICOM allows 64
        series = [{"uid": f"{study_uid}.{n}", "number": n,
                   "modality": _coding(DCM, modality, display),
                   "numberOfInstances": rng.randint(i_lo, i_hi),
                   "bodySite": _coding(SNOMED, *SITES[site])}
                  for n in range(1, rng.randint(s_lo, s_hi) + 1)]
        service = "ecg" if modality == "ECG" else "imaging"
        weights = PRIORITY_WEIGHTS[service]
        priority = rng.choices(list(weights), list(weights.values()))[0]
        started = self._past(*UPLOAD_DELAY[priority], at)
        study = {
            "resourceType": "ImagingStudy", "id": fac.next_id("img"),
            "meta": {"versionId": "1"},
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}],
            "status": "available", "modality": [_coding(DCM, modality, display)],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "started": started, "description": description,
            "numberOfSeries": len(series),
            "numberOfInstances": sum(s["numberOfInstances"] for s in series),
            "series": series}
        request = {
            "resourceType": "ServiceRequest", "id": fac.next_id("sr"),
            "meta": {"versionId": "1"}, "status": "active", "intent": "order",
            "priority": priority, "code": {"text": f"{description}：远程阅片"},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "supportingInfo": [{"reference": f"ImagingStudy/{study['id']}"}],
            "authoredOn": started,
            "requester": {"reference": f"Organization/{fac.spec.id}"}}
        for res in (study, request):
            if at is None:
                self._queue.append((fac, res))
            else:
                self._push(at, fac, res)
        self._on_file(fac, patient, ITEM_OF_STUDY.get((modality, site)), started)
        self._read_later(fac, patient, study, modality, service, priority, at or self._now)

    def _read_later(self, fac: _Facility, patient: dict, study: dict, modality: str,
                    service: str, priority: str, sent: datetime) -> None:
        """In the history, the reading centre reports after a realistic turnaround."""
        centre = self._by_id.get(fac.spec.reading_centres.get(service, ""))
        if centre is None:
            return
        rng = self._rng
        median, spread = TURNAROUND[priority]
        started = datetime.fromisoformat(study["started"])
        issued = max(started + timedelta(minutes=median * rng.lognormvariate(0, spread)),
                     sent + timedelta(minutes=1))
        amend = rng.random() < AMENDED_REPORT_SHARE
        behind = priority == "routine" and rng.random() < BACKLOG_SHARE
        if self._live_from is not None and (issued > self._live_from or (
                behind and self._live_from - sent < BACKLOG_DAYS)):
            return  # still waiting at "now": the demo's readers take it from the worklist
        report = self.reading_report(
            centre.spec.id, f"{fac.spec.id}.{study['id']}", f"{fac.spec.id}.{patient['id']}",
            modality, study["description"], study["started"],
            issued.replace(microsecond=0))
        self._push(issued, centre, report)
        later = issued + timedelta(minutes=rng.randint(30, 240))
        if amend and (self._live_from is None or later <= self._live_from):
            self._push(later, centre, self.amendment(report, later.replace(microsecond=0)))

    def _order(self, fac: _Facility) -> bool:
        """A hospital doctor orders catalogue items for a patient with recent results (here
        or, for a referred resident, at another facility): the order-time recognition
        check has something to find. False if no such patient is on file."""
        rng = self._rng
        ids = list(fac.patients)
        if not ids:
            return False
        found = []
        for pid in rng.sample(ids, min(40, len(ids))):
            person = self._person.get(f"{fac.spec.id}.{pid}")
            recent = sorted({item for item, when in self._results.get(person, ())
                             if self._now - when <= timedelta(days=ITEMS[item][1])})
            if recent:
                found.append((pid, recent))
        if not found:
            return False
        pid, recent = found[0]
        items = rng.sample(recent, min(len(recent), rng.choice((1, 1, 2))))
        if rng.random() < 0.3:  # and something not on file, or no longer valid
            extra = rng.choice(sorted(ITEMS))
            if extra not in items:
                items.append(extra)
        patient = fac.patients[pid]
        for item in items:
            name, _, spec = ITEMS[item]
            coding = [_coding(ITEM_SYSTEM, item, name)]
            if isinstance(spec, str):
                coding.append(_coding(LOINC, spec, ANALYTES[spec].display))
            lab = isinstance(spec, str)
            self._queue.append((fac, {
                "resourceType": "ServiceRequest", "id": fac.next_id("sr"),
                "meta": {"versionId": "1"}, "status": "active", "intent": "order",
                "priority": "routine",
                "category": [{"coding": [_coding(SNOMED, *(
                    ("108252007", "Laboratory procedure") if lab else
                    ("363679005", "Imaging")))]}],
                "code": {"coding": coding, "text": name},
                "subject": {"reference": f"Patient/{pid}"}, "authoredOn": iso(self._now),
                "requester": {"reference": f"Organization/{fac.spec.id}"}}))
            if not self.live and rng.random() < HISTORY_RETEST_SHARE:
                self._test(fac, patient, item,
                           self._now + timedelta(minutes=rng.randint(30, 180)))
        return True

    def _test(self, fac: _Facility, patient: dict, item: str, due: datetime) -> None:
        """The ordered item done again at ``fac``: its result is published at ``due``."""
        spec = ITEMS[item][2]
        if isinstance(spec, str):
            when = self._past(5, 25, due)
            self._push(due, fac, self._lab(fac, patient, ANALYTES[spec], when))
        else:
            modality, site = spec
            self._imaging(fac, patient, modality, site, at=due)


def _round(value: float, places: int) -> float:
    # Whole-unit results stay JSON integers ("72 /min", not "72.0 /min").
    return round(value, places) if places else round(value)
