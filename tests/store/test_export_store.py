"""The export writer on every store: streamed in partitions (a server-side cursor on
PostgreSQL), filtered by facility, consent exclusions, compartment and _since, and every
patient audited once before the files exist."""

from __future__ import annotations

import orjson
import pytest

from hub.engine.projection import Event
from hub.engine.rebuild import ensure_built
from hub.engine.writer import write
from hub.export import writer
from hub.export.deidentify import pseudonym
from hub.export.writer import Cancelled, ExportSpec, write_export
from hub.record.projection import SharedRecordProjection
from tests.support.events import envelope
from tests.support.resources import observation, patient

PROJECTION = SharedRecordProjection()
SECRET = b"test-identity-secret-0123456789"


def fill(store, hub_clock, patients: int = 7, per: int = 3) -> None:
    events = []
    for facility in ("township-1", "city-1"):
        events.append(envelope({"resourceType": "Organization", "id": "org",
                                "name": facility}, facility))
        for p in range(patients):
            events.append(envelope(patient(f"p{p}", mrn=f"M{p}"), facility))
            for o in range(per):
                when = hub_clock.on(-o)  # o days ago
                events.append(envelope(observation(f"o{p}-{o}", pid=f"p{p}", updated=when),
                                       facility))
    tables = ensure_built(store, PROJECTION)
    with store.begin() as conn:
        write(conn, tables, PROJECTION.apply([Event.from_envelope(e, "t", 0, i)
                                              for i, e in enumerate(events)]))


def run(store, tmp_path, spec: ExportSpec, cancel_after: int | None = None):
    audited: list[set[str]] = []
    seen = []

    def cancelled() -> bool:
        seen.append(1)
        return cancel_after is not None and len(seen) > cancel_after

    outputs = write_export(store, spec, tmp_path / "out", lambda *_: None,
                           lambda keys: audited.append(set(keys)), cancelled)
    files = {o.type: [orjson.loads(line) for line in
                      (tmp_path / "out" / o.file).read_bytes().splitlines()] for o in outputs}
    return outputs, files, audited


def spec(**kw) -> ExportSpec:
    values = dict(types=("Organization", "Patient", "Observation"), patients_only=False,
                  facilities=None, excluded=frozenset(), since=None, secret=None)
    values.update(kw)
    return ExportSpec(**values)


def test_the_writer_streams_partitions_filters_and_audits(store, tmp_path, hub_clock,
                                                          monkeypatch):
    fill(store, hub_clock)
    monkeypatch.setattr(writer, "PARTITION", 4)  # many partitions from a small table
    outputs, files, audited = run(store, tmp_path, spec())
    assert {o.type: o.count for o in outputs} == {"Organization": 2, "Patient": 14,
                                                  "Observation": 42}
    assert files["Observation"][0]["subject"]["reference"].startswith("Patient/")
    every = {f"{f}.p{p}" for f in ("township-1", "city-1") for p in range(7)}
    assert set().union(*audited) == every
    assert sum(len(a) for a in audited) == len(every)  # once each, however many partitions

    _, files, audited = run(store, tmp_path, spec(
        patients_only=True, facilities=frozenset({"township-1"}),
        excluded=frozenset({"township-1.p0"})))
    assert "Organization" not in files
    assert {p["id"] for p in files["Patient"]} == {f"township-1.p{p}" for p in range(1, 7)}
    assert len(files["Observation"]) == 18

    _, files, _ = run(store, tmp_path, spec(types=("Observation",), since=hub_clock.date(0)))
    assert len(files["Observation"]) == 14  # only today's, one per patient

    _, files, _ = run(store, tmp_path, spec(types=("Patient",), secret=SECRET))
    assert {p["id"] for p in files["Patient"]} == {pseudonym(SECRET, "Patient", k)
                                                   for k in every}
    assert not any("name" in p or "identifier" in p for p in files["Patient"])


def test_a_cancelled_export_stops_between_partitions(store, tmp_path, hub_clock, monkeypatch):
    fill(store, hub_clock)
    monkeypatch.setattr(writer, "PARTITION", 4)
    with pytest.raises(Cancelled):
        run(store, tmp_path, spec(), cancel_after=3)
