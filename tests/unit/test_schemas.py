"""The contract files in schemas/ agree with the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from adapters.apps import contract
from adapters.apps.notifier import NOTIFICATIONS
from hub.config import Settings, Topics
from hub.engine.receipts import Receipt, parse_receipt
from hub.envelope import new_event
from hub.registry.consortium_file import load_directory
from hub.signing import demo_signer

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
ENVELOPE = json.loads((SCHEMAS / "envelope.schema.json").read_text())


def as_document(env) -> dict:
    return {"headers": {k: v.decode() for k, v in env.headers()}, "key": env.key,
            "value": env.data.decode()}


def test_code_built_envelopes_match_the_schema():
    env = demo_signer("township-1").sign(
        new_event("township-1", "Observation", "obs-1", "township-1.p-1", b"{}"))
    jsonschema.validate(as_document(env), ENVELOPE)
    # members of a signed batch (a manifest of 5: paths of 2 and 3 levels), and the hub's
    for signer in (demo_signer("township-1"), demo_signer("hub")):
        for member in signer.sign_batch([new_event(
                "township-1", "Observation", f"obs-{i}", "township-1.p-1", b"{}")
                for i in range(5)]):
            jsonschema.validate(as_document(member), ENVELOPE)


@pytest.mark.parametrize("header, value", [
    ("ce_specversion", "0.3"), ("ce_source", "hospital"), ("ce_type", "Observation"),
    ("ce_subject", "obs-1"), ("ce_signature", "rsa=abc"),
    ("ce_signature", "hmac-sha256=" + "0" * 64),
    ("ce_signature", "ed25519-batch;kid=township-1#1;sig=" + "A" * 86),  # no place, no path
])
def test_schema_refuses_what_the_code_refuses(header, value):
    doc = as_document(demo_signer("township-1").sign(
        new_event("township-1", "Observation", "obs-1", "k", b"{}")))
    doc["headers"][header] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, ENVELOPE)


def test_generated_contract_files_are_the_ones_in_schemas():
    """The feeds' schemas and the AsyncAPI document come from the models: `hub app schemas`
    writes them, and a file edited by hand (or a model changed without it) fails here."""
    generated = contract.generated()
    assert {"asyncapi.yaml", "lab-feed.schema.json", "imaging-feed.schema.json",
            "recognition-prompt.schema.json", "referral-feed.schema.json",
            "alerts-feed.schema.json"} <= set(generated)
    for name, text in generated.items():
        assert (SCHEMAS / name).read_text() == text, f"{name}: run `hub app schemas`"
    assert contract.stale(SCHEMAS) == []


def test_asyncapi_names_every_configured_topic_and_the_example_app():
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    t = Settings().topics
    # every topic the hub uses, and the example app's own; no other
    assert addresses == set(t.model_dump().values()) | {NOTIFICATIONS}
    receive = {doc["channels"][o["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
               for o in doc["operations"].values() if o["action"] == "receive"}
    assert receive == {t.inbound, t.lab, t.imaging, t.referral}  # the hub's and the app's


def test_asyncapi_follows_the_settings_topic_names():
    renamed = contract.default_settings().model_copy(update={"topics": Topics(lab="x.lab")})
    doc = contract.asyncapi_document(renamed)
    assert "x.lab" in {c["address"] for c in doc["channels"].values()}
    assert "hie.lab.v1" not in {c["address"] for c in doc["channels"].values()}


@pytest.mark.parametrize("message, schema_file", [
    ({"type": "hie.lab.result.v1", "id": "lab-e1", "resource": "Observation/township-1.o1",
      "patient": "township-1.p1", "version": "v", "source_event": "e1", "status": "final",
      "visible": True, "flag": "HH"}, "lab-feed.schema.json"),
    ({"type": "hie.recognition.withdrawn.v1", "id": "rec-withdrawn-x",
      "request": "ServiceRequest/township-1.sr1", "patient": "township-1.p1",
      "items": ["GLU"], "why": "lapsed"}, "recognition-prompt.schema.json"),
])
def test_models_and_schema_files_agree_on_what_is_valid(message, schema_file):
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.validate(message, schema)
    shape = next(c.shape for c in contract.FEED_CONTRACTS if c.file == schema_file)
    TypeAdapter(shape).validate_python(message)
    for broken in ({**message, "type": "hie.other.v1"}, {**message, "id": 7},
                   {k: v for k, v in message.items() if k != "patient"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
        with pytest.raises(PydanticValidationError):
            TypeAdapter(shape).validate_python(broken)


def test_consortium_schema_accepts_the_bundled_demo_and_refuses_bad_tiers(tmp_path):
    assert len(load_directory(None)) == 18
    bad = tmp_path / "c.yaml"
    bad.write_text("facilities:\n  - {id: a, name: A, tier: palace, token: 0123456789abcdef}\n")
    from hub.errors import ConfigError

    with pytest.raises(ConfigError, match="facilities/0/tier"):
        load_directory(bad)


def test_deploy_example_consortium_is_valid():
    example = SCHEMAS.parent / "deploy" / "consortium.example.yaml"
    directory = load_directory(example)
    assert len(directory) == 18
    assert all(f.token.startswith("CHANGE-ME") for f in directory)
    assert all(not f.record.keys for f in directory)  # keys come from rotate-key


def test_receipts_match_their_schema_and_read_back():
    schema = json.loads((SCHEMAS / "receipt.schema.json").read_text())
    for receipt in (Receipt("village-1", ("e1", "e2")),
                    Receipt("village-1", (), {"e3": "invalid-resource: Observation.status"})):
        key, value, _ = receipt.record()
        jsonschema.validate(json.loads(value), schema)
        assert key == b"village-1" and parse_receipt(value) == receipt
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"facility": "village-1"}, schema)  # says nothing
    assert parse_receipt(b"not json") is None and parse_receipt(b'{"x": 1}') is None
