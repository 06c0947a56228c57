"""``hub bench --check``: judging a run's ratios against the stored baseline (no timing)."""

from __future__ import annotations

import json

import pytest

from bench.check import BASELINE, RatioTable, load_baseline, regressions

BASE = {
    "rebuild shared record from journal": {"ratio": 0.70, "band": 0.05, "better": "higher"},
    "publish -> queryable @500/s p99": {"ratio": 1.30, "band": 0.20, "better": "lower"},
}


def test_a_rate_ratio_within_its_band_passes():
    assert regressions({"rebuild shared record from journal": 0.66}, BASE) == []
    assert regressions({"rebuild shared record from journal": 0.90}, BASE) == []


def test_a_rate_ratio_that_fell_past_its_band_is_named_once():
    lines = regressions({"rebuild shared record from journal": 0.62}, BASE)
    assert len(lines) == 1
    assert lines[0].startswith("rebuild shared record from journal: ratio 0.62x fell from "
                               "0.70x by 0.08")


def test_a_latency_ratio_regresses_by_rising():
    name = "publish -> queryable @500/s p99"
    assert regressions({name: 1.10}, BASE) == []  # faster than the baseline: fine
    assert regressions({name: 1.45}, BASE) == []
    assert "rose from 1.30x" in regressions({name: 1.60}, BASE)[0]


def test_figures_missing_on_either_side_are_not_judged():
    assert regressions({"peers: eventsourcing catch-up": 0.01}, BASE) == []
    assert regressions({}, BASE) == []


def test_the_table_keeps_each_ratio_and_which_way_is_better():
    table = RatioTable()
    for col in ("figure", "hub", "baseline", "ratio", "target", "ok"):
        table.add_column(col)
    table.add_row("rebuild shared record from journal", "40,000 ev/s", "60,000 ev/s",
                  "0.67x", ">= 0.6x", "yes")
    table.add_row("publish -> queryable @500/s p99", "19.8 ms", "15.5 ms (bare)", "1.28x",
                  "p99 < 100 ms", "yes")
    table.add_row("rebuild 1,000,000 events, PostgreSQL", "not measured", "-", "-", "-", "")
    assert table.ratios == {"rebuild shared record from journal": 0.67,
                            "publish -> queryable @500/s p99": 1.28}
    assert table.better == {"rebuild shared record from journal": "higher",
                            "publish -> queryable @500/s p99": "lower"}
    # Every row as printed, markup gone, for the README's table.
    assert table.cells[0] == ["rebuild shared record from journal", "40,000 ev/s",
                              "60,000 ev/s", "0.67x", ">= 0.6x", "yes"]
    assert len(table.cells) == 3


def test_the_committed_baseline_is_usable_and_an_unusable_one_is_refused(tmp_path):
    figures = load_baseline(BASELINE)
    assert "rebuild shared record from journal" in figures
    assert all(f["band"] > 0 for f in figures.values())
    bad = tmp_path / "baseline.json"
    bad.write_text(json.dumps({"figures": {"x": {"ratio": 0.7}}}))
    with pytest.raises(ValueError, match="a ratio and a band"):
        load_baseline(bad)
    with pytest.raises(ValueError, match="no baseline file"):
        load_baseline(tmp_path / "missing.json")


def test_saved_runs_make_a_baseline_of_medians_and_bands(tmp_path):
    from bench.check import MIN_BAND, baseline_from_runs, main, run_record

    table = RatioTable()
    for col in ("figure", "hub", "baseline", "ratio", "target", "ok"):
        table.add_column(col)
    runs = []
    for ratio, p99 in ((0.70, "19.8 ms"), (0.80, "21.0 ms"), (0.74, "20.0 ms")):
        table.ratios.clear()
        table.add_row("ingest: gateway", "1 res/s", "1 res/s", f"{ratio:.2f}x", "", "")
        table.add_row("latency p99", p99, "1 ms", "1.30x", "", "")
        runs.append(run_record(table, "a run"))
    base = baseline_from_runs(runs, "three runs")["figures"]
    assert base["ingest: gateway"]["ratio"] == 0.74
    assert base["ingest: gateway"]["band"] == 0.10  # the spread the runs showed
    assert base["latency p99"] == {"ratio": 1.3, "band": 0.16, "better": "lower",
                                   "runs": [1.3, 1.3, 1.3]}  # no spread: 12 % of the ratio
    assert base["ingest: gateway"]["band"] >= MIN_BAND
    # Through the command: saved runs in, a usable baseline out.
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    assert main([str(tmp_path / "baseline.json"), *map(str, paths)]) == 0
    assert regressions({"ingest: gateway": 0.60},
                       load_baseline(tmp_path / "baseline.json")) != []
    assert main([str(tmp_path / "x.json"), str(tmp_path / "missing.json")]) == 2


def test_a_partial_run_updates_only_its_figures_over_a_baseline(tmp_path):
    from bench.check import main, run_record

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"about": "last month", "figures": {
        "ingest: gateway": {"ratio": 0.56, "band": 0.07, "better": "higher"},
        "rebuild": {"ratio": 1.05, "band": 0.13, "better": "higher"}}}))
    table = RatioTable()
    for col in ("figure", "hub", "baseline", "ratio", "target", "ok"):
        table.add_column(col)
    table.add_row("ingest: gateway", "1 res/s", "1 res/s", "0.64x", "", "")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(run_record(table, "hub bench --only ingest")))
    out = tmp_path / "new.json"
    assert main([str(out), str(run), "--over", str(old)]) == 0
    made = load_baseline(out)
    assert made["ingest: gateway"]["ratio"] == 0.64  # measured now
    assert made["rebuild"] == {"ratio": 1.05, "band": 0.13, "better": "higher"}  # kept
    assert "last month" in json.loads(out.read_text())["about"]
    assert main([str(out), str(run), "--over", str(tmp_path / "missing.json")]) == 2
    assert main([str(out), str(run), "--over"]) == 2
