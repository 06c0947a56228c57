"""Family-doctor teams, signed residents and devices in the consortium file: checks, the
round trip through the file, and their FHIR forms (valid R4B, inactive when gone)."""

from __future__ import annotations

import copy

import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from hub.errors import ConfigError
from hub.registry import care, care_sync
from hub.registry.consortium_file import (
    parse_consortium,
    read_consortium,
    to_document,
    write_consortium,
)
from hub.store.db import open_store


def demo_doc() -> dict:
    return to_document(read_consortium(None))


def test_the_demo_lists_teams_residents_and_devices():
    c = read_consortium(None).care
    assert [t.id for t in c.teams] == ["team-c1", "team-t1"]
    assert c.team("team-c1").specialist == "city-1"
    team, resident = c.team_of("community-1.home-03")
    assert team.id == "team-c1" and resident.diabetic
    assert c.device("bp-c1-01").patient == "community-1.home-01"
    assert c.device("bp-spare-1").patient is None
    assert c.device("nobody") is None


def test_round_trip_through_the_file(tmp_path):
    c = read_consortium(None)
    path = tmp_path / "consortium.yaml"
    write_consortium(c, path)
    assert read_consortium(path).care == c.care


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d["teams"][0].update(specialist="county-9"), "unknown specialist 'county-9'"),
    (lambda d: d["teams"][1]["residents"].append(copy.deepcopy(d["teams"][0]["residents"][0])),
     "one family-doctor team per resident"),
    (lambda d: d["devices"][0].update(patient="township-1.home-01"),
     "not a patient of its facility community-1"),
    (lambda d: d["devices"].append(copy.deepcopy(d["devices"][0])), "device ids must be unique"),
    (lambda d: d["devices"][0].update(kind="thermometer"), "devices/0/kind"),
    (lambda d: d["teams"][0]["residents"][0].update(conditions=["gout"]), "conditions/0"),
])
def test_inconsistent_teams_and_devices_are_refused(edit, words):
    doc = demo_doc()
    edit(doc)
    with pytest.raises(ConfigError, match=words):
        parse_consortium(yaml.safe_load(yaml.safe_dump(doc, allow_unicode=True)), "test")


def test_fhir_forms_are_valid_and_say_when_an_entry_left():
    resources = care.resources(read_consortium(None).care)
    assert {k.split("/")[0] for k in resources} == {"CareTeam", "EpisodeOfCare", "Device"}
    for sync_id, (key, res) in resources.items():
        # The hub publishes these itself (they do not come through the edge): R4B, checked
        # with the FHIR models directly.
        get_fhir_model_class(res["resourceType"]).model_validate(res)
        gone_key, gone = care.retired(sync_id)
        get_fhir_model_class(gone["resourceType"]).model_validate(gone)
        assert gone["status"] in ("inactive", "finished") and gone["id"] == res["id"]
        if res["resourceType"] == "EpisodeOfCare":
            assert key == gone_key == res["patient"]["reference"].split("/", 1)[1]
    device = resources["Device/bp-c1-01"][1]
    assert device["patient"] == {"reference": "Patient/community-1.home-01"}
    assert resources["Device/bp-c1-01"][0] == "community-1.home-01"  # keyed with the readings


def test_sync_publishes_each_change_once_and_a_departure_as_inactive(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    registry = read_consortium(None).care
    first = care_sync.pending(store, registry)
    assert len(first) == len(care.resources(registry))
    care_sync.mark_published(store, first)
    assert care_sync.pending(store, registry) == []
    fewer = care.CareRegistry(registry.teams, registry.devices[1:])
    gone = care_sync.pending(store, fewer)
    assert [(sid, res["status"], active) for sid, _, res, active in gone] == [
        ("Device/bp-c1-01", "inactive", False)]
    care_sync.mark_published(store, gone)
    assert care_sync.pending(store, fewer) == []
    store.dispose()
