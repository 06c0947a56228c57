"""Text no store can hold (NUL, lone surrogates) is refused at every edge, located by path;
and an id naming another member's resource is refused."""

from __future__ import annotations

import orjson
import pytest

from adapters.hl7v2.intake import Hl7Intake
from hub.config import Settings
from hub.envelope import Envelope
from hub.errors import EnvelopeError
from hub.fhir import unstorable_text, validate
from hub.ingest.bundle import plan_body
from hub.ingest.prepare import foreign_owner, prepare_upsert
from hub.ingest.verdict import check_inbound
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer
from hub.store.db import open_store
from tests.support.events import envelope
from tests.support.hl7_messages import oru
from tests.support.resources import observation, patient

NUL = "\x00"


def with_note(text: str) -> dict:
    return {**observation("o1"), "note": [{"text": "ok"}, {"text": text}]}


def test_nul_is_located_by_its_path():
    issues = validate(with_note(f"bad{NUL}text"))
    assert [(i.location, i.code) for i in issues] == [("Observation.note[1].text", "value")]
    assert NUL not in issues[0].diagnostics
    # the same with the raw JSON it came from: the byte scan finds the escape, the walk the path
    raw = orjson.dumps(with_note(NUL))
    assert b"\\u0000" in raw
    assert [i.location for i in validate(orjson.loads(raw), raw=raw)] == [
        "Observation.note[1].text"]


def test_element_names_and_lone_surrogates_are_located_too():
    found = unstorable_text({"a": [{"b\x00c": 1}], "d": "\ud800"}, "Observation")
    assert {i.location for i in found} == {"Observation.a[0].b\\u0000c", "Observation.d"}
    assert all(NUL not in i.location and NUL not in i.diagnostics for i in found)


def test_raw_without_the_escape_skips_the_walk():
    # The fast path trusts the raw JSON: without an escaped NUL there is none to find.
    assert unstorable_text({"x": NUL}, "Observation", raw=b'{"x":"fine"}') == []
    assert unstorable_text({"x": NUL}, "Observation", raw=None) != []


def test_json_cannot_carry_a_lone_surrogate():
    # orjson refuses one, so the gateway answers 400 invalid JSON before validation
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"text": "\\ud800"}')


def test_gateway_preparation_refuses_nul_in_body_and_url_id():
    directory = load_directory(None)
    t1 = directory.get("township-1")
    raw = orjson.dumps(with_note(NUL))
    p = prepare_upsert(t1, orjson.loads(raw), "Observation", url_id="o1", raw=raw)
    assert not p.ok and p.issues[0].location == "Observation.note[1].text"
    p = prepare_upsert(t1, {**observation("o1")} | {"id": None}, "Observation",
                       url_id=f"o{NUL}1")
    assert not p.ok and p.issues[0].location == "Observation.id"


def test_bundle_entries_follow_the_bundle_rules():
    directory = load_directory(None)
    t1 = directory.get("township-1")

    def body(btype: str) -> bytes:
        return orjson.dumps({"resourceType": "Bundle", "type": btype, "entry": [
            {"resource": patient("p1"), "request": {"method": "PUT", "url": "Patient/p1"}},
            {"resource": with_note(NUL), "request": {"method": "PUT", "url": "Observation/o1"}},
        ]})

    batch = plan_body(t1, body("batch"), directory)
    assert [p.ok for p in batch.plan.entries] == [True, False]
    assert batch.plan.entries[1].issues[0].location == "Observation.note[1].text"
    assert 1 in batch.refused_entries
    tx = plan_body(t1, body("transaction"), directory).plan
    assert tx.all_or_nothing and not all(p.ok for p in tx.entries)
    assert "Bundle.entry[1].resource.Observation.note[1].text" in {
        i.location for i in tx.all_issues()}


def test_inbound_events_with_nul_are_refused():
    directory = load_directory(None)
    env = envelope(with_note(NUL))
    verdict = check_inbound(directory, env.headers(), env.key.encode(), env.data)
    assert verdict.facility is None and verdict.reason == "invalid-resource"
    assert verdict.issues[0].location == "Observation.note[1].text"
    headers = [(k, v + b"\x00" if k == "ce_id" else v) for k, v in env.headers()]
    with pytest.raises(EnvelopeError, match="NUL"):
        Envelope.from_record(headers, env.key.encode(), env.data)
    assert check_inbound(directory, headers, env.key.encode(), env.data
                         ).reason == "bad-envelope"


class _Capture:
    def __init__(self) -> None:
        self.raw: list = []

    async def publish_raw(self, topic: str, records: list) -> None:
        self.raw += records

    async def publish(self, topic: str, envs: list) -> None:  # pragma: no cover - not reached
        raise AssertionError("a message holding NUL must not be published")


async def test_hl7_message_with_nul_is_refused_ae(tmp_path):
    settings = Settings()
    pub = _Capture()
    intake = Hl7Intake(settings, "township-1", demo_signer("township-1"),
                       pub, open_store(f"sqlite:///{tmp_path / 'hub.db'}"))  # type: ignore[arg-type]
    reply, code, reason = await intake.handle(oru().replace("溶血", f"溶{NUL}血").encode())
    assert code == "AE" and "no store can hold" in reason
    assert "valueString" in reason and b"\x00" not in reply
    assert len(pub.raw) == 1  # the raw message, dead-lettered


def test_another_members_hub_id_is_foreign():
    directory = load_directory(None)
    assert foreign_owner("township-1", "township-2.obs-1", directory) == "township-2"
    assert foreign_owner("township-1", "obs-1", directory) is None
    assert foreign_owner("township-1", "1.2.840.10008", directory) is None  # a DICOM UID
    assert foreign_owner("township-1", "nowhere.obs-1", directory) is None
    t1 = directory.get("township-1")
    for url_id in ("township-2.obs-1", "township-1.township-2.obs-1"):
        p = prepare_upsert(t1, observation("township-2.obs-1"), "Observation", url_id=url_id,
                           members=directory)
        assert not p.ok and p.issues[0].code == "forbidden", url_id
    assert prepare_upsert(t1, observation("obs-1"), "Observation", url_id="township-1.obs-1",
                          members=directory).ok
