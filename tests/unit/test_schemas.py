"""The contract files in schemas/ agree with the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from hub.config import Settings
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


@pytest.mark.parametrize("header, value", [
    ("ce_specversion", "0.3"), ("ce_source", "hospital"), ("ce_type", "Observation"),
    ("ce_subject", "obs-1"), ("ce_signature", "rsa=abc"),
    ("ce_signature", "hmac-sha256=" + "0" * 64),
])
def test_schema_refuses_what_the_code_refuses(header, value):
    doc = as_document(demo_signer("township-1").sign(
        new_event("township-1", "Observation", "obs-1", "k", b"{}")))
    doc["headers"][header] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, ENVELOPE)


def test_asyncapi_names_the_configured_topics():
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    t = Settings().topics
    assert addresses == set(t.model_dump().values())  # every topic the hub uses, no other


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
