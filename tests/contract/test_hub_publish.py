"""``hub-publish``: exported files through the SDK's outbox to the inbound topic, with a
row-level report of what was refused, and exit codes an operator's script can act on."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from adapters.filepublish.cli import app
from tests.contract.test_sdk_outbox import records_on
from tests.support.events import ingest
from tests.support.resources import bundle, observation, patient

pytestmark = [pytest.mark.contract]
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
FACILITY = "township-1"


def run(settings, tmp_path: Path, *args: str):
    result = CliRunner().invoke(app, [*args, "--facility", FACILITY, "--kafka",
                                      settings.bootstrap, "--topic", settings.topics.inbound,
                                      "--outbox", str(tmp_path / "outbox.db"),
                                      "--flush-timeout", "20", "--confirm", "broker"])
    assert "Traceback" not in result.output
    return result


async def test_ndjson_bundle_and_lab_csv_reach_the_hub_with_a_report(make_settings, tmp_path):
    settings = make_settings()
    nd = tmp_path / "export.ndjson"
    bad_obs = {k: v for k, v in observation("o-bad").items() if k != "status"}
    nd.write_bytes(b"\n".join([orjson.dumps(patient("p1")), orjson.dumps(observation("o1")),
                               orjson.dumps(bad_obs), b"{not json", b"",
                               orjson.dumps(observation("o2", value=7.2))]) + b"\n")
    batch = tmp_path / "batch.json"
    batch.write_bytes(orjson.dumps(bundle("batch", patient("p2"), observation("o3", "p2"))))
    report = tmp_path / "refused.csv"
    result = run(settings, tmp_path, str(nd), str(batch), str(SAMPLES / "lab-results.csv"),
                 "--mapping", str(SAMPLES / "lab-mapping.yaml"), "--errors", str(report))
    assert result.exit_code == 1, result.output
    # ndjson: 3 of 5 lines; Bundle: 2 entries; CSV: 8 rows -> 8 Observations + 3 Patients.
    assert "13 rows queued (16 resources)" in result.output
    assert "2 refused" in result.output and "all events acknowledged" in result.output
    assert "export.ndjson row 3, column Observation.status" in result.output
    assert "export.ndjson row 4, column (line)" in result.output
    with report.open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert [(Path(r["file"]).name, r["row"], r["column"]) for r in rows] == [
        ("export.ndjson", "3", "Observation.status"), ("export.ndjson", "4", "(line)")]

    records = records_on(settings.bootstrap, settings.topics.inbound)
    assert len(records) == 16
    by_id = {r[4]["id"]: r[4] for r in records}
    glucose = by_id["P0001-2345-7-20261101073000"]
    assert glucose["valueQuantity"] == {"value": 7.8, "unit": "mmol/L",
                                        "system": "http://unitsofmeasure.org",
                                        "code": "mmol/L"}
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"  # ↑ mapped to H
    assert glucose["effectiveDateTime"] == "2026-11-01T07:30:00+08:00"
    assert glucose["referenceRange"][0]["low"]["value"] == 3.9
    assert by_id["P0003-5196-1-20261102091000"]["valueString"] == "阴性"
    assert by_id["P0002"]["gender"] == "male"
    # A patient's Patient comes before its Observations, on the patient's key.
    order = [r[4]["id"] for r in sorted(records, key=lambda r: (r[0], r[1]))
             if r[2] == f"{FACILITY}.P0001"]
    assert order[0] == "P0001" and len(order) == 4

    accepted, refused, _ = await ingest(settings, tmp_path)
    assert (accepted, refused) == (16, 0)  # the hub agrees with the checks


def test_bad_csv_rows_are_reported_by_row_and_column(make_settings, tmp_path):
    settings = make_settings()
    lab = tmp_path / "lab.csv"
    lab.write_text(
        "病人ID,LOINC,结果,单位,采样时间,提示\n"
        "P1,2345-7,6.1,mmol/L,2026-11-01 07:30,\n"       # row 2: fine
        ",2345-7,6.1,mmol/L,2026-11-01 07:30,\n"         # row 3: no patient
        "P1,glucose,6.1,mmol/L,2026-11-01 07:30,\n"      # row 4: not LOINC
        "P1,2345-7,6.1,mmol/L,yesterday,\n"              # row 5: bad time
        "P1,2345-7,,mmol/L,2026-11-01 07:30,\n"          # row 6: no value
        "P1,2345-7,9.9,mmol/L,2026-11-01 08:30,XX\n",    # row 7: unknown flag
        encoding="utf-8")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns: {patient_id: 病人ID, code: LOINC, value: 结果, unit: 单位, "
                       "time: 采样时间, flag: 提示}\n", encoding="utf-8")
    report = tmp_path / "refused.csv"
    result = run(settings, tmp_path, str(lab), "--mapping", str(mapping), "--errors",
                 str(report))
    assert result.exit_code == 1, result.output
    assert "1 rows queued" in result.output and "5 refused" in result.output
    with report.open(encoding="utf-8-sig") as fh:
        got = [(r["row"], r["column"], r["value"]) for r in csv.DictReader(fh)]
    assert got == [("3", "病人ID", ""), ("4", "LOINC", "glucose"), ("5", "采样时间", "yesterday"),
                   ("6", "结果", ""), ("7", "提示", "XX")]
    assert "row 4, column LOINC ('glucose'): 'glucose' is not a LOINC code" in result.output
    assert len(records_on(settings.bootstrap, settings.topics.inbound)) == 1

    # Everything fine: exit 0.
    good = tmp_path / "good.csv"
    good.write_text(lab.read_text(encoding="utf-8").splitlines()[0] + "\n"
                    "P2,2345-7,5.0,mmol/L,2026-11-02T07:30:00+08:00,N\n", encoding="utf-8")
    result = run(settings, tmp_path, str(good), "--mapping", str(mapping))
    assert result.exit_code == 0, result.output


def test_operator_mistakes_exit_2_with_one_sentence(make_settings, tmp_path):
    settings = make_settings()
    lab = SAMPLES / "lab-results.csv"
    wrong_column = tmp_path / "wrong.yaml"
    wrong_column.write_text("columns: {patient_id: PID, code: LOINC, value: 结果, "
                            "time: 采样时间}\n", encoding="utf-8")
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("columns: {patient_id: 病人ID}\n", encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("columns: [unclosed\n", encoding="utf-8")
    cases = {
        "does not exist": [str(tmp_path / "missing.ndjson")],
        "need --mapping": [str(lab)],
        "'PID' (for patient_id)": [str(lab), "--mapping", str(wrong_column)],
        "does not say which column holds code, value, time": [
            str(lab), "--mapping", str(incomplete)],
        "not valid YAML": [str(lab), "--mapping", str(broken)],
        "cannot read the Ed25519 private key": [str(lab), "--mapping",
                                                str(SAMPLES / "lab-mapping.yaml"),
                                                "--key-file", str(tmp_path / "none.pem")],
    }
    for expected, args in cases.items():
        result = run(settings, tmp_path, *args)
        assert result.exit_code == 2, (expected, result.output)
        assert expected in result.output
        assert len([line for line in result.output.splitlines()
                    if line.startswith("error:")]) == 1
    # Nothing was queued by any of them.
    assert records_on(settings.bootstrap, settings.topics.inbound) == []
