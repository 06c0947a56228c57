"""What a facility sends is what every other facility reads: HL7's own R4 examples
(``samples/fhir``) through validation, the Bundle planner, the shared record and the read
rewrite; each invariant class refused with a located issue; version order by the sender."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.api.capability import capability_statement
from hub.engine.projection import Event
from hub.engine.writer import write
from hub.envelope import new_event
from hub.exactjson import BOM, loads_exact, needs_exact
from hub.fhir import ACCEPTED_TYPES, parse_json, validate
from hub.ingest.bundle import plan_body, plan_bundle
from hub.ingest.conditions import Resolution, entry_conditions
from hub.ingest.prepare import prepare_delete, prepare_upsert
from hub.ingest.verdict import check_inbound
from hub.record.projection import TABLE, SharedRecordProjection
from hub.record.read import resolve_conditions
from hub.record.rules import present
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer
from tests.support.stores import sqlite_with

FHIR = Path(__file__).parents[2] / "samples" / "fhir"
directory = load_directory(None)
township = directory.get("township-1")
SOURCE = "urn:hie:facility:township-1"
# The examples the consortium profile refuses, and why (everything else must be accepted).
PROFILE_REFUSES = {
    "Observation-bmd.json": "Observation.effective[x]",
    "Observation-decimal.json": "Observation.subject",
    "Observation-f202.json": "Observation.effective[x]",
    "Patient-newborn.json": "Patient.identifier",
}
RESOURCES = sorted(p.name for p in FHIR.glob("*.json") if not p.name.startswith("Bundle-"))
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/.*)?$")


def sample(name: str) -> bytes:
    return (FHIR / name).read_bytes()


def as_written(raw: bytes | str):
    """JSON with every number kept as its text: 1.00 and 1.0 differ here."""
    return json.loads(raw, parse_float=lambda s: ("number", s),
                      parse_int=lambda s: ("number", s))


def documented_changes(value, facility: str = "township-1"):
    """The original with only what the README says the hub changes on read: relative
    references (versioned or not) carry the facility's prefix."""
    if isinstance(value, dict):
        out = {k: documented_changes(v, facility) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and (m := _RELATIVE.match(ref)):
            out["reference"] = f"{m[1]}/{facility}.{m[2]}{m[3] or ''}"
        return out
    if isinstance(value, list):
        return [documented_changes(v, facility) for v in value]
    return value


def accepted_and_read_back(raw: bytes) -> tuple[dict, bytes]:
    """What the gateway appends for ``raw`` and what the read API then serves."""
    resource, issues = parse_json(raw)
    assert not issues
    exact = loads_exact(raw) if needs_exact(raw, resource) else None
    p = prepare_upsert(township, resource, resource["resourceType"], raw=raw,
                       members=directory, exact=exact, assign_id=True)
    assert p.ok, p.issues
    served = orjson.dumps(present(p.envelope.data, "township-1", SOURCE,
                                  "2026-12-01T00:00:00.000000Z"))
    return p.resource, served


def expect_served(original: bytes) -> dict:
    want = documented_changes(as_written(original))
    want["id"] = f"township-1.{want['id']}"
    meta = want.setdefault("meta", {})
    meta.setdefault("lastUpdated", "2026-12-01T00:00:00.000000Z")
    meta["source"] = SOURCE
    return want


@pytest.mark.parametrize("name", RESOURCES)
def test_every_example_the_profiles_admit_round_trips_exactly(name):
    raw = sample(name)
    if name in PROFILE_REFUSES:
        issues = validate(orjson.loads(raw))
        assert [i.location for i in issues] and \
            PROFILE_REFUSES[name] in {i.location for i in issues}
        return
    stored, served = accepted_and_read_back(raw)
    # Appended exactly as sent (no stamp, no rewrite: these examples have ids) ...
    assert as_written(orjson.dumps(stored)) == as_written(raw)
    # ... and served with only the documented changes.
    assert as_written(served) == expect_served(raw)


def test_decimals_keep_their_precision_end_to_end():
    # HL7's decimal test resource, with what the consortium profile asks for added.
    dec = sample("Observation-decimal.json").replace(
        b'"status": "final",', b'"status": "final", "subject": {"reference": "Patient/p1"}, '
        b'"effectiveDateTime": "2026-11-30",', 1)
    _, served = accepted_and_read_back(dec)
    values = [c["valueQuantity"]["value"] for c in as_written(served)["component"]]
    assert values == [("number", s) for s in (
        "1.0", "1.00", "1.0", "1E-22", "1000000000000000000", "1.000000000000000000E-245",
        "-1.000000000000000000E+245")]
    assert as_written(served) == expect_served(dec)
    # The faithful path is taken only where orjson would change a number.
    plain = sample("Observation-glasgow.json")
    assert not needs_exact(plain, orjson.loads(plain))
    assert needs_exact(dec, orjson.loads(dec))


def test_a_byte_order_mark_is_tolerated_at_the_start_of_a_body():
    body = orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": orjson.loads(sample("Patient-example.json")),
         "request": {"method": "PUT", "url": "Patient/example"}}]})
    planned = plan_body(township, BOM + body, directory)
    assert not planned.issues and [p.ok for p in planned.plan.entries] == [True]
    assert parse_json(BOM + body)[1], "elsewhere (hie.inbound.v1) a BOM is not JSON"


VALIDATOR = FHIR / "validator"
# HL7's reference-validator cases and what its expected outcome says, as (place, key) the
# hub must refuse with; an empty list: the validator finds nothing the hub checks.
VALIDATOR_CASES = {
    "encounter-period.json": [("Encounter.period", "per-1:")],
    "patient-id-bad-1.json": [("Patient.id", "id:")],
    "patient-id-bad-2.json": [("Patient.id", "id:")],
    "patient-id-bad-3.json": [("Patient.id", "id:")],
    "contained-resource.json": [("Condition.contained[0].id", "id:"),
                                ("Condition.contained[0]", "dom-3:")],
    "pat-security-bad-xhtml.json": [("Patient.text.div", "txt-1:")],
    "xml-bad-entities.json": [("Encounter.text.div", "txt-1:")],
    "hakan-se.json": [("MedicationRequest.requester.reference", "ref-1:")],
    "ai4.json": [("Patient.birthDate", "")],
    "obs-fio2.json": [],
    "obs-vital-signs-mdc.json": [],
    "patient-with-turvakielto.json": [],
}


@pytest.mark.parametrize("name", sorted(VALIDATOR_CASES))
def test_hl7_validator_cases_are_judged_as_the_reference_validator_judges_them(name):
    raw = (VALIDATOR / name).read_bytes()
    # The gateway takes a byte-order mark at the start (xml-bad-entities.json has one).
    issues = validate(orjson.loads(raw.removeprefix(BOM)))
    expected = VALIDATOR_CASES[name]
    if not expected:
        assert issues == []
        stored, served = accepted_and_read_back(raw)
        assert as_written(orjson.dumps(stored)) == as_written(raw)
        assert as_written(served) == expect_served(raw)
        return
    found = {(i.location, i.diagnostics) for i in issues}
    for where, key in expected:
        assert any(loc == where and text.startswith(key) for loc, text in found), found


def _mutated(name: str, change) -> dict:
    res = orjson.loads(sample(name))
    change(res)
    return res


def _set(path: str, value):
    def change(res):
        *parents, last = path.split(".")
        node = res
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return change


def _narrative(div: str):
    return _set("text", {"status": "generated", "div": div})


XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'
INVARIANT_CASES = [
    ("Patient-example.json", _set("id", "a" * 65), "Patient.id", "id:"),
    ("Patient-example.json", _set("id", ".."), "Patient.id", "id:"),
    ("Observation-f001.json", _set("code.coding.0.id", "a b"), "Observation.code.coding[0].id",
     "id:"),
    ("Observation-f001.json", _set("effectivePeriod", {"start": "2013-04-02T10:30:10+01:00",
                                                       "end": "2013-04-02T09:30:10+01:00"}),
     "Observation.effectivePeriod", "per-1:"),
    ("Encounter-f001.json", _set("period", {"start": "2013-02-01", "end": "2012-12-31"}),
     "Encounter.period", "per-1:"),
    ("Observation-f001.json", _set("issued", ""), "Observation.issued", "ele-1:"),
    ("Observation-f001.json", _set("interpretation", []), "Observation.interpretation",
     "ele-1:"),
    ("Observation-f001.json", _set("method", {}), "Observation.method", "ele-1:"),
    ("Observation-f001.json", _set("note", [{"text": "x" * (1024 * 1024 + 1)}]),
     "Observation.note[0].text", "str-1:"),
    ("Observation-f001.json", _set("performer", [{"reference": "#lab"}]),
     "Observation.performer[0].reference", "ref-1:"),
    ("Patient-example.json", _narrative(f"{XHTML}<script>alert(1)</script></div>"),
     "Patient.text.div", "txt-1:"),
    ("Patient-example.json", _narrative(f'{XHTML}<p onclick="steal()">Peter</p></div>'),
     "Patient.text.div", "txt-1:"),
    ("Patient-example.json", _narrative(f'{XHTML}<img src="http://tracker.example/p.gif"/>'
                                        "</div>"), "Patient.text.div", "txt-1:"),
    ("Patient-example.json", _narrative(f'{XHTML}<a href="javascript:go()">x</a></div>'),
     "Patient.text.div", "txt-1:"),
    ("Patient-example.json", _narrative('<div><!DOCTYPE x [<!ENTITY e "e">]>&e;</div>'),
     "Patient.text.div", "txt-1:"),
    ("Patient-example.json", _narrative(f"{XHTML}  </div>"), "Patient.text.div", "txt-2:"),
    ("Observation-f001.json", _set("dataAbsentReason", {"text": "lost"}),
     "Observation.dataAbsentReason", "obs-6:"),
    ("Observation-blood-pressure.json",
     lambda r: r.update(code=r["component"][0]["code"],
                        valueQuantity={"value": 120, "unit": "mmHg"}),
     "Observation.component[0].code", "obs-7:"),
    ("Condition-f201.json", _set("contained", [{"resourceType": "Practitioner", "id": "p"}]),
     "Condition.contained[0]", "dom-3:"),
    ("Condition-f201.json", lambda r: r.update(
        contained=[{"resourceType": "Practitioner", "id": "p", "meta": {"versionId": "2"}}],
        asserter={"reference": "#p"}), "Condition.contained[0].meta", "dom-4:"),
    ("Condition-f201.json", lambda r: r.update(
        contained=[{"resourceType": "Practitioner", "id": "p",
                    "meta": {"security": [{"code": "R"}]}}], asserter={"reference": "#p"}),
     "Condition.contained[0].meta.security", "dom-5:"),
    ("Condition-f201.json", lambda r: r.update(
        contained=[{"resourceType": "Practitioner", "id": "p", "contained": [
            {"resourceType": "Organization", "id": "o"}]}], asserter={"reference": "#p"}),
     "Condition.contained[0]", "dom-2:"),
]


@pytest.mark.parametrize("name, change, where, key", INVARIANT_CASES,
                         ids=[f"{c[3].rstrip(':')}-{i}" for i, c in enumerate(INVARIANT_CASES)])
def test_each_broken_invariant_is_refused_with_its_key_and_place(name, change, where, key):
    assert validate(orjson.loads(sample(name))) == [], "the example itself is valid"
    issues = validate(_mutated(name, change))
    assert any(i.location == where and i.diagnostics.startswith(key) for i in issues), issues


def _transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_bundle_invariants_are_refused_with_their_key():
    pat = orjson.loads(sample("Patient-example.json"))
    no_request = plan_bundle(township, _transaction({"resource": pat}), members=directory)
    assert no_request.entries[0].issues[0].diagnostics.startswith("bdl-3:")
    post = {"method": "POST", "url": "Patient"}
    twice = plan_bundle(township, _transaction(
        {"fullUrl": "urn:uuid:1", "resource": pat, "request": post},
        {"fullUrl": "urn:uuid:1", "resource": pat, "request": post}))
    assert twice.bundle_issues[0].location == "Bundle.entry[1].fullUrl"
    assert twice.bundle_issues[0].diagnostics.startswith("bdl-7:")
    versioned = plan_bundle(township, _transaction(
        {"fullUrl": "http://h/fhir/Patient/x/_history/1", "resource": pat,
         "request": {"method": "PUT", "url": "Patient/x"}}))
    assert versioned.bundle_issues[0].diagnostics.startswith("bdl-8:")
    # HL7's example with versions of one resource under one fullUrl: bdl-7 allows that.
    refs = plan_bundle(township, orjson.loads(sample("Bundle-bundle-references.json")))
    assert not refs.bundle_issues


def test_the_specifications_transaction_example_is_refused_entry_by_entry():
    planned = plan_body(township, sample("Bundle-bundle-transaction.json"), directory)
    issues = {i.location: i.diagnostics for i in planned.plan.all_issues()}
    assert "DELETE entries are not accepted" in issues["Bundle.entry[5].request.method"]
    assert "DELETE entries are not accepted" in issues["Bundle.entry[6].request.method"]
    assert "operations ($lookup) are not served" in issues["Bundle.entry[7].request.url"]
    assert "GET is not supported" in issues["Bundle.entry[8].request.method"]
    assert "412" in issues["Bundle.entry[4].request.ifMatch"]
    assert planned.plan.all_or_nothing


def _lipids_as_transaction() -> dict:
    """HL7's lipid panel (a collection with relative references) sent the way a facility
    creates new resources: POST entries with urn:uuid fullUrls and references to them."""
    lipids = orjson.loads(sample("Bundle-lipids.json"))
    entries = []
    urns = {}
    for n, e in enumerate(lipids["entry"]):
        res = e["resource"]
        urns[f"{res['resourceType']}/{res['id']}"] = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
    text = orjson.dumps(lipids).decode()
    for old, urn in urns.items():
        text = text.replace(f'"reference":"{old}"', f'"reference":"{urn}"')
    for e in orjson.loads(text)["entry"]:
        res = e["resource"]
        res.pop("id")
        res.setdefault("effectiveDateTime", "2011-03-04T08:30:00+11:00")
        entries.append({"fullUrl": urns[f"{res['resourceType']}/{e['fullUrl'].split('/')[-1]}"],
                        "resource": res, "request": {"method": "POST",
                                                     "url": res["resourceType"]}})
    return _transaction(*entries)


def test_urn_uuid_full_urls_resolve_across_the_transaction():
    tx = _lipids_as_transaction()
    plan = plan_bundle(township, tx, members=directory)
    assert all(p.envelope is not None for p in plan.entries), plan.all_issues()
    ids = {tx["entry"][i]["fullUrl"]: f"{p.resource['resourceType']}/{p.resource['id']}"
           for i, p in enumerate(plan.entries)}
    assert len(set(ids.values())) == 5 and not any("urn:" in v for v in ids.values())
    report = plan.entries[0].resource
    assert [r["reference"] for r in report["result"]] == \
        [ids[r["reference"]] for r in tx["entry"][0]["resource"]["result"]]
    # nothing in what is appended still points into the Bundle
    assert b"urn:uuid" not in b"".join(p.envelope.data for p in plan.entries)
    assert report["subject"] == tx["entry"][0]["resource"]["subject"]  # outside: unchanged


def test_versioned_references_are_rewritten_like_unversioned_ones():
    obs = {**orjson.loads(sample("Observation-f001.json")),
           "basedOn": [{"reference": "ServiceRequest/req/_history/2"}]}
    shown = present(orjson.dumps(obs), "township-1", SOURCE, "2026-12-01T00:00:00Z")
    assert shown["basedOn"] == [{"reference": "ServiceRequest/township-1.req/_history/2"}]
    assert shown["subject"] == {"reference": "Patient/township-1.f001",
                                "display": "P. van de Heuvel"}


def _fold(events: list[Event]):
    projection = SharedRecordProjection()
    store, tables = sqlite_with(projection)
    with store.begin() as conn:
        write(conn, tables, projection.apply(events))
    return store, tables[TABLE]


def _event(env, offset: int) -> Event:
    return Event.from_envelope(env, "hie.events.v1", 0, offset)


def test_conditional_create_and_update_match_on_the_facilitys_identifiers():
    pat = orjson.loads(sample("Patient-example.json"))  # urn:oid:1.2.36.146.595.217.0.1|12345
    other = {**pat, "id": "other", "identifier": [{"system": "urn:x", "value": "12345"}]}
    stored = [prepare_upsert(township, r, "Patient").envelope for r in (pat, other)]
    foreign = prepare_upsert(directory.get("township-2"), pat, "Patient").envelope
    store, _ = _fold([_event(e, i) for i, e in enumerate([*stored, foreign])])
    criteria = "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
    bundle = _transaction(
        {"fullUrl": "urn:uuid:p", "resource": dict(pat),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria}},
        {"resource": pat, "request": {"method": "PUT", "url": f"Patient?{criteria}"}},
        {"resource": other, "request": {
            "method": "PUT", "url": "Patient/other", "ifMatch": 'W/"1"'}},
        {"resource": pat, "request": {"method": "PUT", "url": "Patient?identifier=12345"}},
    )
    del bundle["entry"][0]["resource"]["id"]
    asked = {i: entry_conditions(e) for i, e in enumerate(bundle["entry"])}
    answers = resolve_conditions(store, "township-1", asked)
    # township-2's Patient/example has the identifier too: only the sender's own count
    assert answers[0] == Resolution(("example",)) and answers[1] == Resolution(("example",))
    assert answers[2] == Resolution((), "1")  # stored without a versionId: version 1
    assert answers[3] == Resolution(("example", "other"))  # any system: both match
    plan = plan_bundle(township, bundle, members=directory, resolutions=answers)
    assert plan.entries[0].kept == "Patient/example" and plan.entries[0].envelope is None
    assert plan.entries[1].resource["id"] == "example"
    assert plan.entries[2].ok
    assert plan.entries[3].issues[0].code == "multiple-matches"
    nothing = plan_bundle(township, bundle, members=directory, resolutions={
        0: Resolution(), 1: Resolution(), 2: Resolution((), "3"), 3: Resolution()})
    assert nothing.entries[0].envelope is not None  # created: no match
    assert nothing.entries[1].resource["id"] == "example"  # the body's id: no match
    assert "412" in nothing.entries[2].issues[0].diagnostics
    store.dispose()


def test_the_capability_statement_lists_exactly_what_is_served():
    cs = capability_statement()
    assert cs["fhirVersion"] == "4.3.0"
    served = [r["type"] for r in cs["rest"][0]["resource"]]
    assert served == [*ACCEPTED_TYPES, "AuditEvent"]
    obs = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Observation")
    assert {p["name"] for p in obs["searchParam"]} == {
        "patient", "subject", "_id", "_count", "_offset", "code", "date", "_sort", "category"}
    for refused in ("Questionnaire", "Bundle", "Person", "Parameters"):
        assert validate({"resourceType": refused})[0].code == "not-supported"


# Version order, on both entry paths: whatever order versions arrive in, and whether or not
# the sender says when each was made, the record keeps the sender's newest version.
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _version(v: int, stamped: bool) -> dict:
    res = {**orjson.loads(sample("Observation-glasgow.json")), "valueQuantity": {"value": v}}
    res["meta"] = {"versionId": str(v)}
    if stamped:
        res["meta"]["lastUpdated"] = (T0 + timedelta(minutes=v)).isoformat()
    return res


def _via_gateway(res: dict):
    return prepare_upsert(township, res, "Observation").envelope


def _via_inbound(res: dict):
    env = demo_signer("township-1").sign(new_event(
        "township-1", "Observation", res["id"], "township-1.example", orjson.dumps(res)))
    verdict = check_inbound(directory, env.headers(), env.key.encode(), env.data)
    assert verdict.facility == "township-1", verdict
    return env


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5).flatmap(lambda n: st.tuples(
    st.permutations(range(1, n + 1)), st.lists(st.booleans(), min_size=n, max_size=n))),
    st.sampled_from([_via_gateway, _via_inbound]), st.booleans())
def test_the_senders_newest_version_wins_whatever_arrives_when(case, path, delete_last):
    order, stamped = case
    envs = [path(_version(v, stamped[v - 1])) for v in order]
    newest = max(order)
    if delete_last:  # a deletion naming the newest version, arriving before a straggler
        envs.insert(len(envs) - 1, prepare_delete(township, "Observation", "glasgow",
                                                  "township-1.example", str(newest)))
    store, table = _fold([_event(e, i) for i, e in enumerate(envs)])
    with store.connect() as conn:
        body = conn.execute(sa.select(table.c.body)).scalar_one()
    if delete_last:
        assert body is None
    else:
        assert orjson.loads(body)["meta"]["versionId"] == str(newest)
    store.dispose()


def test_a_late_version_1_without_last_updated_does_not_replace_version_2():
    v2, v1 = _version(2, False), _version(1, False)
    store, table = _fold([_event(_via_gateway(v2), 0), _event(_via_gateway(v1), 1)])
    with store.connect() as conn:
        assert orjson.loads(conn.execute(sa.select(table.c.body)).scalar_one()
                            )["valueQuantity"] == {"value": 2}
    store.dispose()



def test_hub_publish_sends_files_with_their_numbers_as_written(tmp_path):
    from adapters.filepublish.fhirfiles import read_fhir
    from adapters.filepublish.mapping import Mapped

    dec = sample("Observation-decimal.json").replace(
        b'"status": "final",', b'"status": "final", "subject": {"reference": "Patient/p1"}, '
        b'"effectiveDateTime": "2026-11-30",', 1)
    one = tmp_path / "decimal.json"
    one.write_bytes(BOM + dec)
    nd = tmp_path / "export.ndjson"
    nd.write_bytes(orjson.dumps(orjson.loads(sample("Observation-f001.json"))) + b"\n" +
                   orjson.dumps(loads_exact(dec)) + b"\n")
    batch = tmp_path / "batch.json"
    batch.write_bytes(b'{"resourceType":"Bundle","type":"batch","entry":[{"resource":' + dec +
                      b',"request":{"method":"PUT","url":"Observation/decimal"}}]}')
    for path, n in ((one, 1), (nd, 2), (batch, 1)):
        mapped = [m for m in read_fhir(path) if isinstance(m, Mapped)]
        assert len(mapped) == n, list(read_fhir(path))
        sent = orjson.dumps(mapped[-1].resources[0])
        assert as_written(sent) == as_written(dec)
