"""The consent rules: who a patient's Consent keeps out, for which purposes, when."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub import clock
from hub.consent.rules import (
    APP_SYSTEM,
    GROUP_SYSTEM,
    OPERATIONS,
    RESEARCH,
    TIER_SYSTEM,
    TREATMENT,
    Reader,
    consent_rule,
    provision_issues,
    refusing,
)
from hub.fhir import validate
from tests.support.resources import consent
from tests.support.resources import consent_actor as actor

CITY = Reader("facility", "city-1", TREATMENT, "city-hospital", "city-group")
COUNTY = Reader("facility", "county-1", TREATMENT, "county-hospital", "county-community")
TOWNSHIP = Reader("facility", "township-1", TREATMENT, "township-centre", "county-community")
DASHBOARD = Reader("app", "chronic-dashboard", OPERATIONS)


def purpose(code: str) -> dict:
    return {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": code}


def refuses(resource: dict, reader: Reader, owner: str = "township-1") -> bool:
    rule = consent_rule(resource, "township-1.c1", "township-1.p1")
    return refusing([rule] if rule else [], reader, owner, clock.now()) is not None


def test_an_opt_out_of_one_facility_keeps_only_that_facility_out():
    c = consent({"type": "deny", "actor": [actor(None, "city-1")]})
    assert validate(c) == []  # a real R4B Consent the gateway accepts
    assert refuses(c, CITY)
    assert not refuses(c, COUNTY) and not refuses(c, DASHBOARD)


def test_tiers_groups_and_apps_are_named_by_identifier():
    assert refuses(consent({"type": "deny", "actor": [actor(TIER_SYSTEM, "city-hospital")]}),
                   CITY)
    by_group = consent({"type": "deny", "actor": [actor(GROUP_SYSTEM, "county-community")]})
    assert refuses(by_group, COUNTY) and not refuses(by_group, CITY)
    by_app = consent({"type": "deny", "actor": [actor(APP_SYSTEM, "chronic-dashboard")]})
    assert refuses(by_app, DASHBOARD) and not refuses(by_app, CITY)


def test_the_facility_holding_the_record_always_reads_it():
    everyone = consent({"type": "deny"})
    assert not refuses(everyone, TOWNSHIP, owner="township-1")
    assert refuses(everyone, TOWNSHIP, owner="county-1")  # the same person's other chart
    assert refuses(everyone, CITY)


def test_purposes_narrow_a_denial():
    research_only = consent({"type": "deny", "purpose": [purpose(RESEARCH)]})
    assert not refuses(research_only, CITY)
    assert refuses(research_only, Reader("app", "study", RESEARCH))


def test_nested_permits_are_exceptions_and_permit_carries_denies():
    only_my_county = consent({"type": "deny", "provision": [
        {"type": "permit", "actor": [actor(GROUP_SYSTEM, "county-community")]}]})
    assert refuses(only_my_county, CITY) and not refuses(only_my_county, COUNTY)
    wrapped = consent({"type": "permit", "provision": [
        {"type": "deny", "actor": [actor(None, "city-1")]}]})
    assert refuses(wrapped, CITY) and not refuses(wrapped, COUNTY)
    assert not refuses(consent({"type": "permit"}), CITY)


def test_only_active_consents_in_their_period_count(hub_clock):
    c = consent({"type": "deny", "actor": [actor(None, "city-1")]}, status="inactive")
    assert not refuses(c, CITY)
    past = {"start": hub_clock.date(-30), "end": hub_clock.date(-1)}
    assert not refuses(consent({"type": "deny", "period": past}), CITY)
    now = {"start": hub_clock.date(-1), "end": hub_clock.date(0)}  # the end day is whole
    assert refuses(consent({"type": "deny", "period": now}), CITY)
    later = {"start": hub_clock.on(1)}
    assert not refuses(consent({"type": "deny", "period": later}), CITY)
    month = hub_clock.date(0)[:7]
    assert refuses(consent({"type": "deny", "period": {"start": month, "end": month}}), CITY)


def test_what_the_hub_cannot_honour_is_refused_at_the_gateway():
    c = consent({"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types",
                                             "code": "Observation"}],
                 "actor": [{"role": {"text": "x"}, "reference": {"reference": "Patient/p9"}}]})
    where = {loc for loc, _, _ in provision_issues(c)}
    assert where == {"Consent.provision.class", "Consent.provision.actor[0].reference"}
    assert {i.location for i in validate(c)} >= where
    no_patient = {k: v for k, v in consent({"type": "deny"}).items() if k != "patient"}
    assert "Consent.patient" in {i.location for i in validate(no_patient)}


readers = st.builds(
    Reader, st.sampled_from(["facility", "app"]),
    st.sampled_from(["city-1", "county-1", "township-1", "chronic-dashboard"]),
    st.sampled_from([TREATMENT, OPERATIONS, RESEARCH]),
    st.sampled_from([None, "city-hospital", "township-centre"]),
    st.sampled_from([None, "city-group", "county-community"]))
actors = st.lists(st.sampled_from([
    actor(None, "city-1"), actor(TIER_SYSTEM, "township-centre"),
    actor(GROUP_SYSTEM, "city-group"), actor(APP_SYSTEM, "chronic-dashboard")]), max_size=3)
purposes = st.lists(st.sampled_from([purpose(TREATMENT), purpose(RESEARCH)]), max_size=2)


@given(readers, actors, purposes, actors)
def test_a_denial_is_exactly_its_actors_purposes_minus_its_exceptions(reader, who, why,
                                                                     but):
    provision = {"type": "deny", "actor": who, "purpose": why}
    if but:
        provision["provision"] = [{"type": "permit", "actor": but}]
    c = consent(provision)
    names = reader.names()

    def covers(listed: list[dict]) -> bool:
        found = set()
        for a in listed:
            ref = a["reference"]
            found.add((ref["identifier"]["system"], ref["identifier"]["value"])
                      if "identifier" in ref else
                      ("urn:hie:facility", ref["reference"].split("/")[1]))
        return not listed or bool(found & names)

    expected = covers(who) and (not why or reader.purpose in {p["code"] for p in why}) \
        and not (but and covers(but))
    assert refuses(c, reader, owner="village-9") == expected
    # A denial never widens: adding a deny provision for someone else keeps this one's answer.
    more = consent({"type": "permit", "provision": [provision, {
        "type": "deny", "actor": [actor(None, "nobody-reads-as-this")]}]})
    assert refuses(more, reader, owner="village-9") == expected


def test_a_period_can_end_before_it_starts_and_then_never_applies(hub_clock):
    start, end = hub_clock.date(-1), hub_clock.date(-2)
    assert not refuses(consent({"type": "deny", "period": {"start": start, "end": end}}),
                       CITY)
