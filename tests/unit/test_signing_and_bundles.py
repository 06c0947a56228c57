import dataclasses
from datetime import UTC, datetime

import pytest

from hub.envelope import new_event
from hub.errors import AuthError
from hub.facilities import FacilityDirectory
from hub.ingest.bundle import plan_bundle
from hub.ingest.prepare import prepare_upsert
from hub.registry.consortium_file import load_directory
from hub.registry.model import HUB_TIER, FacilityRecord, SigningKey
from hub.signing import demo_signer
from tests.support.resources import bundle, observation, patient

directory = load_directory(None)
township = directory.get("township-1")


def test_demo_consortium_shape():
    tiers = [f.tier for f in directory]
    assert len(directory) == 18
    assert tiers.count("village-clinic") == 10 and tiers.count("township-centre") == 4
    assert tiers.count("community-centre") == 2
    assert "demo-secret" not in repr(township)


def test_signature_verifies_and_detects_tampering():
    env = demo_signer("township-1").sign(
        new_event("township-1", "Patient", "p1", "township-1.p1", b"{}"))
    assert directory.verify(env) == "township-1#1"
    for change in ({"data": b'{"x":1}'}, {"key": "township-1.p2"},
                   {"subject": "Patient/p2"}, {"id": "other"}, {"time": "2026-01-01T00:00:00Z"}):
        with pytest.raises(AuthError, match="bad signature") as caught:
            directory.verify(dataclasses.replace(env, **change))
        assert caught.value.reason == "bad-signature"
    with pytest.raises(AuthError, match="not signed"):
        directory.verify(dataclasses.replace(env, signature=None))
    with pytest.raises(AuthError, match="unknown facility"):
        directory.verify(dataclasses.replace(env, source="urn:hie:facility:nowhere"))
    with pytest.raises(AuthError, match="nobody speaks for another") as caught:
        directory.verify(dataclasses.replace(env, source="urn:hie:facility:township-2"))
    assert caught.value.reason == "source-mismatch"


def test_authenticate():
    assert directory.authenticate("demo-secret-village-2").id == "village-2"
    with pytest.raises(AuthError, match="no credential"):
        directory.authenticate(None)
    with pytest.raises(AuthError, match="unknown"):
        directory.authenticate("guess")


def test_prepare_assigns_an_id_and_signs_without_stamping_the_resource():
    sent = {k: v for k, v in patient().items() if k not in ("id", "meta")}
    p = prepare_upsert(township, sent, "Patient", assign_id=True)
    assert p.ok and p.resource["id"]
    # Only the id is added: the hub does not stamp meta.lastUpdated into what was sent.
    assert p.resource == {**sent, "id": p.resource["id"]}
    assert p.envelope.key == f"township-1.{p.resource['id']}"
    # The gateway signs with the hub's key: valid for the log, never for the inbound topic.
    hub = FacilityRecord("hub", "demo", HUB_TIER, keys=(
        SigningKey("hub#1", demo_signer("hub").public_key, datetime(2026, 1, 1, tzinfo=UTC)),))
    with_hub = FacilityDirectory(list(directory), hub=hub)
    assert with_hub.verify(p.envelope, allow_hub=True) == "hub#1"
    with pytest.raises(AuthError, match="nobody speaks for another"):
        with_hub.verify(p.envelope)
    mismatch = prepare_upsert(township, patient("p1"), "Patient", url_id="p2")
    assert not mismatch.ok and "does not match the URL id" in mismatch.issues[0].diagnostics
    own_hub_id = prepare_upsert(township, patient("township-1.p1"), "Patient",
                                url_id="township-1.p1")
    assert own_hub_id.resource["id"] == "p1"


def test_bundle_plans():
    bad = {"resourceType": "Observation", "id": "x"}
    plan = plan_bundle(township, bundle("batch", patient(), bad, observation()))
    assert [p.ok for p in plan.entries] == [True, False, True]
    assert not plan.all_or_nothing
    assert any(i.location.startswith("Bundle.entry[1].resource.Observation")
               for i in plan.all_issues())
    assert plan_bundle(township, bundle("transaction", patient())).all_or_nothing
    assert "no entries" in plan_bundle(township, bundle("batch")).bundle_issues[0].diagnostics
    assert "not accepted" in plan_bundle(township, bundle("searchset", patient())
                                         ).bundle_issues[0].diagnostics
