"""What the record package says about each lab result: may it stand in for a re-test at
the receiving hospital today, and if not, why."""

from __future__ import annotations

from datetime import timedelta

from hub.recognition.catalogue import load_catalogue
from hub.referral.package import recognition_status
from hub.registry.consortium_file import read_consortium

CATALOGUE = load_catalogue()


def test_recognition_status_of_each_result(hub_clock):
    today = hub_clock.day
    # The demo consortium's EQA windows move with the clock: read it on the test's day.
    registry = {f.id: f.record for f in read_consortium(None).facilities}
    effective = hub_clock.on(-3, "08:30:00")

    def result(loinc: str | None, status: str = "final") -> dict:
        return {"id": "county-1.o1", "loinc": loinc, "effective": effective,
                "status": status, "performer": "county-1"}

    assert recognition_status(CATALOGUE, registry, result("2339-0"), today) == {
        "status": "recognisable", "item": "GLU", "valid_through": hub_clock.date(4)}
    # HbA1c stays valid 90 days; glucose only 7.
    late = today + timedelta(days=6)
    assert recognition_status(CATALOGUE, registry, result("2339-0"), late)["why"].startswith(
        "expired")
    assert recognition_status(CATALOGUE, registry, result("4548-4"), late)["status"] == \
        "recognisable"
    amended = recognition_status(CATALOGUE, registry, result("2339-0", status="amended"),
                                 today)
    assert amended == {"status": "not-recognisable", "item": "GLU",
                       "why": "the result was amended after issue"}
    assert recognition_status(CATALOGUE, registry, result("10839-9"), today) == {
        "status": "never-recognised", "why": "on the negative list"}  # troponin
    assert recognition_status(CATALOGUE, registry, result("8480-6"), today) == {
        "status": "not-in-catalogue"}
    assert recognition_status(CATALOGUE, registry, result(None), today) == {
        "status": "not-in-catalogue"}
