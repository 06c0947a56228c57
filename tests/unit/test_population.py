"""The simulated consortium publishes valid, self-consistent and reproducible FHIR R4B."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import clock
from hub.clock import CONSORTIUM_TZ, FixedClock
from hub.demo.population import (
    HISTORY,
    ITEM_SYSTEM,
    ITEMS,
    NATIONAL_ID_SYSTEM,
    PopulationSimulator,
    SimFacility,
    anchored,
    gb11643_check,
    history_times,
    order_items,
)
from hub.fhir import validate

TIER_COUNTS = {"city-hospital": 1, "county-hospital": 1, "township-centre": 4,
               "community-centre": 2, "village-clinic": 10}


def _centres(tier: str) -> dict[str, str]:  # as in the demo consortium
    reader = "city-1" if tier in ("city-hospital", "community-centre") else "county-1"
    return {"imaging": reader, "ecg": reader, "pathology": "city-1"}


CONSORTIUM = [SimFacility(f"{tier.split('-')[0]}-{n}", tier, _centres(tier))
              for tier, count in TIER_COUNTS.items() for n in range(1, count + 1)]
TIER_OF = {f.id: f.tier for f in CONSORTIUM}
N_EVENTS = 2_000
# Any date: nothing here may depend on the day the tests run.
ANCHOR = datetime(2026, 6, 15, 9, 30, tzinfo=CONSORTIUM_TZ)
BEGIN = ANCHOR - HISTORY
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
DICOM_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
LOCAL_ID = re.compile(r"^(p|obs|dr|img|sr|rep)-[0-9]{6}$")


def run(seed: int = 7, n: int = N_EVENTS, facilities: list[SimFacility] = CONSORTIUM,
        start: datetime = BEGIN):
    sim = PopulationSimulator(facilities, seed=seed, start=start)
    return [sim.next_event() for _ in range(n)]


def story(seed: int = 7, history: int = 1_500, live: int = 400, state: dict | None = None,
          anchor: datetime = ANCHOR) -> tuple[PopulationSimulator, list, list]:
    """The demo's way: a back-filled history up to ``anchor``, then live events after it."""
    sim, times = anchored(CONSORTIUM, seed, history, state=state, now=anchor)
    past = [sim.next_event(t) for t in times]
    now = [sim.next_event(anchor + timedelta(seconds=0.2 * i)) for i in range(live)]
    return sim, past, now


@pytest.fixture(scope="module")
def events() -> list[tuple[str, dict]]:
    return run()


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def consortium_rule_problems(r: dict) -> list[str]:
    """The consortium rules, restated here so the test does not lean on hub.profiles alone."""
    rtype, problems = r["resourceType"], []
    required = {"Observation": ("status", "code", "subject"),
                "DiagnosticReport": ("status", "code", "subject"),
                "ServiceRequest": ("status", "intent", "subject"),
                "ImagingStudy": ("subject",), "Patient": ("identifier",)}[rtype]
    problems += [f"{rtype}.{e} missing" for e in required if not r.get(e)]
    if rtype == "Observation" and not any(k.startswith("effective") for k in r):
        problems.append("Observation without effective[x]")
    if rtype == "ImagingStudy" and not any(
            i.get("system") == "urn:dicom:uid" and i.get("value") for i in r.get("identifier", [])):
        problems.append("ImagingStudy without a urn:dicom:uid identifier")
    meta = r.get("meta", {})
    if not (meta.get("versionId", "").isdigit() and meta.get("lastUpdated", "").endswith("+08:00")):
        problems.append(f"bad meta {meta}")
    return problems


def references(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "reference"] + [
            ref for v in node.values() for ref in references(v)]
    if isinstance(node, list):
        return [ref for v in node for ref in references(v)]
    return []


def test_every_event_validates_with_fhir_resources_r4b(events):
    failures = []
    for fid, r in events:
        try:
            get_fhir_model_class(r["resourceType"]).model_validate(r)
        except Exception as exc:  # collect them all for one readable failure
            failures.append((fid, r["resourceType"], r["id"], str(exc)[:300]))
    assert failures == []


def test_every_event_passes_the_consortium_rules_and_the_hub_edge(events):
    problems = [(fid, r["id"], p) for fid, r in events for p in consortium_rule_problems(r)]
    assert problems == []
    # The same gate the hub applies to everything that enters the log.
    rejected = [(fid, r["id"], validate(r)) for fid, r in events if validate(r)]
    assert rejected == []


def test_events_are_plain_json_with_facility_local_ids(events):
    for fid, r in events:
        assert fid in TIER_OF
        assert json.loads(json.dumps(r, ensure_ascii=False)) == r  # no tuples, dates, sets
        assert LOCAL_ID.match(r["id"]), r["id"]


def test_the_mix_covers_every_resource_type_and_reflects_the_tiers(events):
    types = Counter(r["resourceType"] for _, r in events)
    assert set(types) == {"Patient", "Observation", "DiagnosticReport", "ImagingStudy",
                          "ServiceRequest"}
    by_tier: dict[str, Counter] = {}
    modalities: dict[str, set[str]] = {}
    for fid, r in events:
        by_tier.setdefault(TIER_OF[fid], Counter())[r["resourceType"]] += 1
        if r["resourceType"] == "ImagingStudy":
            modalities.setdefault(TIER_OF[fid], set()).update(m["code"] for m in r["modality"])
    for primary in ("village-clinic", "community-centre"):
        assert set(by_tier[primary]) == {"Patient", "Observation"}
    assert modalities["township-centre"] <= {"US", "DX", "ECG"}
    for hospital in ("county-hospital", "city-hospital"):
        assert modalities[hospital] <= {"CT", "MR", "CR", "US"}
        assert by_tier[hospital]["DiagnosticReport"] > 0
    # Only hospitals order catalogue items; every imaging study goes with a reading request.
    orderers = {TIER_OF[fid] for fid, r in events if order_items(r)}
    assert orderers == {"county-hospital", "city-hospital"}
    requests = {(fid, r["supportingInfo"][0]["reference"]) for fid, r in events
                if r["resourceType"] == "ServiceRequest" and "supportingInfo" in r}
    studies = {(fid, f"ImagingStudy/{r['id']}") for fid, r in events
               if r["resourceType"] == "ImagingStudy"}
    assert requests <= studies and len(studies - requests) <= 1  # the last may be next
    village_codes = {r["code"]["coding"][0]["code"] for fid, r in events
                     if TIER_OF[fid] == "village-clinic" and r["resourceType"] == "Observation"}
    assert village_codes <= {"85354-9", "8867-4", "29463-7", "15074-8"}


def test_same_seed_replays_the_same_stream_and_another_seed_does_not(events):
    dump = json.dumps(events, ensure_ascii=False)
    assert json.dumps(run(seed=7), ensure_ascii=False) == dump
    assert json.dumps(run(seed=8), ensure_ascii=False) != dump
    assert json.dumps(run(seed=7, start=BEGIN + timedelta(days=1)),
                      ensure_ascii=False) != dump


def test_same_seed_and_anchor_replay_the_demo_story_identically():
    _, past, now = story()
    _, past2, now2 = story()
    assert json.dumps([past, now], ensure_ascii=False) == json.dumps([past2, now2],
                                                                      ensure_ascii=False)
    _, other, _ = story(anchor=ANCHOR + timedelta(days=3))
    assert json.dumps(other, ensure_ascii=False) != json.dumps(past, ensure_ascii=False)


def test_caller_edits_do_not_leak_into_later_events():
    clean = run(n=1_500)
    sim = PopulationSimulator(CONSORTIUM, seed=7, start=BEGIN)
    vandalised = []
    for _ in range(1_500):
        fid, r = sim.next_event()
        vandalised.append(json.loads(json.dumps((fid, r))))
        r["meta"]["versionId"] = "999"
        r.pop("status", None)
        for c in r.get("category", []):
            c["coding"].clear()
    assert [tuple(e) for e in vandalised] == clean


def test_references_point_to_what_was_already_published(events):
    """A facility's own resources by local id; another facility's (a reading centre's
    report on a township's study) by hub id ``<facility>.<id>``."""
    published: dict[str, set[str]] = {}
    subjects: dict[tuple[str, str], str] = {}
    for fid, r in events:
        seen = published.setdefault(fid, set())
        for ref in references(r):
            rtype, _, rid = ref.partition("/")
            owner, dot, local = rid.rpartition(".")
            if rtype == "Organization":
                assert rid == fid
            elif dot:
                assert owner != fid and f"{rtype}/{local}" in published.get(owner, ()), ref
            else:
                assert ref in seen, f"{fid} {r['resourceType']}/{r['id']} refers to unknown {ref}"
        if r["resourceType"] == "DiagnosticReport" and "imagingStudy" not in r:
            assert r["result"]
            for ref in r["result"]:
                assert ref["reference"].startswith("Observation/")
                assert subjects[(fid, ref["reference"])] == r["subject"]["reference"]
        if r["resourceType"] == "Observation":
            subjects[(fid, f"Observation/{r['id']}")] = r["subject"]["reference"]
        seen.add(f"{r['resourceType']}/{r['id']}")


def test_patients_look_like_chinese_patients_with_valid_national_ids(events):
    patients = [(fid, r) for fid, r in events if r["resourceType"] == "Patient"
                and r["meta"]["versionId"] == "1"]
    with_id = 0
    for fid, p in patients:
        name = p["name"][0]
        assert name["text"] == name["family"] + "".join(name["given"])
        assert all("\u4e00" <= ch <= "\u9fff" for ch in name["text"])
        birth = date.fromisoformat(p["birthDate"])
        start = BEGIN.date()
        age = start.year - birth.year - ((start.month, start.day) < (birth.month, birth.day))
        assert 1 <= age <= 95
        mrn = [i for i in p["identifier"] if i["system"] == f"urn:hie:facility:{fid}:mrn"]
        assert len(mrn) == 1 and re.fullmatch(r"MRN[0-9]{5,}", mrn[0]["value"])
        national = [i["value"] for i in p["identifier"] if i["system"] == NATIONAL_ID_SYSTEM]
        if national:
            with_id += 1
            (nid,) = national
            assert re.fullmatch(r"[0-9]{17}[0-9X]", nid)
            assert nid[17] == gb11643_check(nid[:17])
            assert nid[6:14] == p["birthDate"].replace("-", "")
            assert int(nid[16]) % 2 == (p["gender"] == "male")
            assert p["telecom"][0]["system"] == "phone"
        assert p["address"][0]["text"].startswith("浙江省")
    assert 0.65 < with_id / len(patients) < 0.95


def test_gb11643_check_digit_matches_published_examples():
    # The worked example of GB 11643-1999 and one ending in X.
    assert gb11643_check("11010519491231002") == "X"
    assert gb11643_check("44052418800101001") == "4"


def test_labs_carry_ucum_reference_ranges_and_a_consistent_interpretation(events):
    flags = Counter()
    for fid, r in events:
        if r["resourceType"] != "Observation":
            continue
        cat = r["category"][0]["coding"][0]["code"]
        assert cat in {"vital-signs", "laboratory"}
        assert r["code"]["coding"][0]["system"] == "http://loinc.org"
        assert r["performer"] == [{"reference": f"Organization/{fid}"}]
        quantities = [r["valueQuantity"]] if "valueQuantity" in r else [
            c["valueQuantity"] for c in r["component"]]
        assert all(q["system"] == UCUM and q["value"] > 0 for q in quantities)
        if cat != "laboratory":
            continue
        value = r["valueQuantity"]["value"]
        rr = r["referenceRange"][0]
        low, high = rr["low"]["value"], rr["high"]["value"]
        assert rr["low"]["code"] == rr["high"]["code"] == r["valueQuantity"]["code"]
        (coding,) = r["interpretation"][0]["coding"]
        assert coding["system"] == INTERPRETATION
        expected = "L" if value < low else "H" if value > high else "N"
        assert coding["code"] == expected
        flags[expected] += 1
    assert flags["H"] > 0 and flags["L"] > 0 and flags["N"] > flags["H"]


def test_imaging_studies_carry_valid_dicom_uids_and_consistent_counts(events):
    studies = [r for _, r in events if r["resourceType"] == "ImagingStudy"]
    assert studies
    for s in studies:
        (ident,) = s["identifier"]
        uid = ident["value"].removeprefix("urn:oid:")
        assert ident["value"].startswith("urn:oid:") and DICOM_UID.match(uid) and len(uid) <= 64
        assert s["status"] == "available"
        assert s["numberOfSeries"] == len(s["series"])
        assert s["numberOfInstances"] == sum(x["numberOfInstances"] for x in s["series"])
        for x in s["series"]:
            assert DICOM_UID.match(x["uid"]) and len(x["uid"]) <= 64
            assert x["modality"]["code"] == s["modality"][0]["code"]
            assert x["bodySite"]["system"] == "http://snomed.info/sct"
        assert "endpoint" not in s


def test_versions_only_move_forward_and_amendments_change_the_value(events):
    latest: dict[tuple[str, str, str], dict] = {}
    statuses = Counter()
    reports = Counter()
    last_stamp = None
    for fid, r in events:
        stamp = when(r["meta"]["lastUpdated"])
        assert stamp >= BEGIN and (last_stamp is None or stamp > last_stamp)
        last_stamp = stamp
        key = (fid, r["resourceType"], r["id"])
        before = latest.get(key)
        if before is None:
            assert r["meta"]["versionId"] == "1"
        else:
            assert int(r["meta"]["versionId"]) > int(before["meta"]["versionId"])
            assert stamp > when(before["meta"]["lastUpdated"])
            if r["resourceType"] == "Observation":
                statuses[r["status"]] += 1
                assert before["status"] != "entered-in-error"
                if r["status"] != "entered-in-error":
                    assert r["status"] in {"amended", "corrected", "final"}
                    assert values(r) != values(before)
            if r["resourceType"] == "DiagnosticReport" and "imagingStudy" in r:
                reports[r["status"]] += 1
                assert r["conclusion"] != before["conclusion"]
        latest[key] = r
        if r["resourceType"] == "Observation":
            assert when(r["effectiveDateTime"]) <= stamp
    revisions = sum(1 for _, r in events if r["meta"]["versionId"] != "1")
    assert 0.015 < revisions / len(events) < 0.05
    assert statuses["amended"] + statuses["corrected"] > 0 and statuses["entered-in-error"] > 0
    assert all(status == "amended" for status in reports)


def values(obs: dict) -> list[float]:
    if "valueQuantity" in obs:
        return [obs["valueQuantity"]["value"]]
    return [c["valueQuantity"]["value"] for c in obs["component"]]


def test_building_an_event_takes_well_under_a_millisecond():
    sim = PopulationSimulator(CONSORTIUM, seed=11, start=BEGIN)
    started = time.perf_counter()
    for _ in range(5_000):
        sim.next_event()
    assert (time.perf_counter() - started) / 5_000 < 0.0005


def test_unknown_tiers_and_empty_consortia_are_refused():
    with pytest.raises(ValueError):
        PopulationSimulator([SimFacility("x", "space-station")])
    with pytest.raises(ValueError):
        PopulationSimulator([])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32), size=st.integers(min_value=1, max_value=5))
def test_any_seed_and_consortium_keeps_references_and_rules_intact(seed, size):
    facilities = [SimFacility(f"f{i}", tier) for i, tier in enumerate(list(TIER_COUNTS)[:size])]
    seen: dict[str, set[str]] = {}
    for fid, r in run(seed=seed, n=400, facilities=facilities):
        assert consortium_rule_problems(r) == []
        for ref in references(r):
            assert ref == f"Organization/{fid}" or ref in seen.get(fid, set())
        seen.setdefault(fid, set()).add(f"{r['resourceType']}/{r['id']}")


# --- the demo's story: anchored to the clock, a history, then live -------------------------


def test_a_population_anchored_to_the_clock_is_dated_within_the_last_weeks():
    at = datetime(2027, 3, 9, 2, 15, tzinfo=UTC)  # any day, by an injected clock
    previous = clock.use_clock(FixedClock(at))
    try:
        sim, times = anchored(CONSORTIUM, seed=7, history_events=1_200)
    finally:
        clock.use_clock(previous)
    assert len(times) == 1_200 and times[-1] == at and times[0] > at - HISTORY
    events = [sim.next_event(t) for t in times]
    earliest = at - HISTORY - timedelta(days=1)  # a result drawn before it was published
    for _, r in events:
        stamp = when(r["meta"]["lastUpdated"])
        assert at - HISTORY < stamp <= at
        for k in ("effectiveDateTime", "started", "issued", "authoredOn"):
            if k in r:
                assert earliest < when(r[k]) <= stamp, (k, r)
    days = {when(r["meta"]["lastUpdated"]).date() for _, r in events}
    assert len(days) >= 14  # spread over the whole fortnight, not bunched at its start
    _, live = sim.next_event(at + timedelta(seconds=1))
    assert sim.live and when(live["meta"]["lastUpdated"]) == at + timedelta(seconds=1)


def test_history_times_continue_where_an_earlier_run_stopped():
    full = history_times(ANCHOR, 1_400)
    assert len(full) == 1_400 and full[0] > ANCHOR - HISTORY and full[-1] == ANCHOR
    day = history_times(ANCHOR, 1_400, since=ANCHOR - timedelta(days=1))
    assert len(day) == 100 and day[0] > ANCHOR - timedelta(days=1)
    assert history_times(ANCHOR, 1_400, since=ANCHOR) == []
    assert len(history_times(ANCHOR, 1_400, since=ANCHOR - timedelta(days=90))) == 1_400


def test_reading_centres_report_in_the_history_and_leave_the_rest_to_the_readers():
    _, past, now = story()
    studies = {f"{fid}.{r['id']}": r for fid, r in past + now
               if r["resourceType"] == "ImagingStudy"}
    priority = {f"{fid}.{r['supportingInfo'][0]['reference'].split('/')[1]}": r["priority"]
                for fid, r in past + now if "supportingInfo" in r}
    first: dict[str, dict] = {}
    for fid, r in past:
        if r["resourceType"] == "DiagnosticReport" and "imagingStudy" in r:
            ref = r["imagingStudy"][0]["reference"].split("/")[1]
            sid = ref if "." in ref else f"{fid}.{ref}"
            first.setdefault(sid, r)
            s = studies[sid]
            assert fid == _centres(TIER_OF[sid.split(".")[0]])[
                "ecg" if s["modality"][0]["code"] == "ECG" else "imaging"]
            assert when(s["started"]) < when(r["issued"]) <= when(r["meta"]["lastUpdated"])
            assert r["conclusionCode"][0]["coding"][0]["system"] == "http://snomed.info/sct"
    # Nothing after "now" comes from the simulated reading centres: the readers do that.
    assert not [r for _, r in now if r["resourceType"] == "DiagnosticReport"
                and "imagingStudy" in r]
    minutes = {p: [] for p in ("stat", "asap", "urgent", "routine")}
    for sid, r in first.items():
        minutes[priority[sid]].append((when(r["issued"]) - when(studies[sid]["started"])
                                       ).total_seconds() / 60)
    sla = {"stat": 30, "asap": 60, "urgent": 120, "routine": 24 * 60}
    for p, values in minutes.items():
        assert values, p
        met = sum(v <= sla[p] for v in values) / len(values)
        assert 0.6 < met < 1.0 or len(values) < 10, (p, met)  # mostly met, not always
    # Studies still unread at "now": recent ones, waiting for the readers.
    waiting = [s for sid, s in studies.items() if sid not in first
               and when(s["meta"]["lastUpdated"]) <= ANCHOR]
    assert waiting and all(ANCHOR - when(s["started"]) < timedelta(days=3) for s in waiting)


def test_orders_name_catalogue_items_the_patient_has_recent_results_for():
    sim, past, now = story(live=1_500)
    results: dict[tuple[str, str], list[tuple[str, datetime]]] = {}
    for fid, r in past + now:
        if r["resourceType"] == "Observation" and r["category"][0]["coding"][0][
                "code"] == "laboratory":
            results.setdefault((fid, r["subject"]["reference"]), []).append(
                (r["code"]["coding"][0]["code"], when(r["effectiveDateTime"])))
    orders = [(fid, r) for fid, r in now if order_items(r)]
    assert len(orders) > 20
    on_file = 0
    for fid, r in orders:
        (item,) = order_items(r)
        name, validity, spec = ITEMS[item]
        assert r["code"]["coding"][0] == {"system": ITEM_SYSTEM, "code": item, "display": name}
        assert r["intent"] == "order" and r["status"] == "active"
        if isinstance(spec, str) and any(
                code == spec and when(r["authoredOn"]) - t <= timedelta(days=validity)
                for code, t in results.get((fid, r["subject"]["reference"]), ())):
            on_file += 1
    assert on_file > 0  # at the same facility; the rest are referred residents' results
    # The doctor re-tests: the result follows within 20-90 s, for that patient.
    fid, order = orders[-1]
    pid = order["subject"]["reference"].split("/")[1]
    assert sim.fulfil(fid, pid, "GLU")
    assert not sim.fulfil(fid, "p-999999", "GLU")
    later = ANCHOR + timedelta(hours=1)
    follow = [sim.next_event(later + timedelta(seconds=i)) for i in range(200)]
    assert any(f == fid and r["resourceType"] == "Observation"
               and r["subject"]["reference"] == f"Patient/{pid}"
               and r["code"]["coding"][0]["code"] == "15074-8" for f, r in follow)


def test_a_snapshot_continues_the_story_with_new_ids_and_known_patients():
    sim, past, now = story()
    state = json.loads(json.dumps(sim.snapshot(), ensure_ascii=False))
    first = {(fid, r["resourceType"], r["id"]) for fid, r in past + now
             if r["meta"]["versionId"] == "1"}
    patients = {(fid, f"Patient/{r['id']}") for fid, r in past + now
                if r["resourceType"] == "Patient"}
    _, past2, now2 = story(seed=8, state=state, anchor=ANCHOR + timedelta(days=2))
    assert 0 < len(past2) < 1_500 / 5  # two days to fill in, not a whole fortnight
    again = [(fid, r["resourceType"], r["id"]) for fid, r in past2 + now2
             if r["meta"]["versionId"] == "1" and (fid, r["resourceType"], r["id"]) in first]
    assert again == []  # no id handed out twice, so nothing earlier is overwritten
    returning = {(fid, r["subject"]["reference"]) for fid, r in past2 + now2
                 if "subject" in r} & patients
    assert returning  # the same residents come back
    stamps = [when(r["meta"]["lastUpdated"]) for _, r in past2 + now2]
    assert stamps[0] > when(now[-1][1]["meta"]["lastUpdated"]) and stamps == sorted(stamps)
