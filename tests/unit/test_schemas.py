"""The contract files in schemas/ agree with the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from hub.config import Settings
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
    assert addresses == {t.inbound, t.events, t.deadletter, t.lab, t.imaging, t.recognition,
                         t.alerts}


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
