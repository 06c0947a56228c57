"""A lab-results CSV, as a LIS exports it, mapped to FHIR Observations (and Patients).

The mapping is a small YAML file naming which CSV column holds what
(``samples/csv/lab-mapping.yaml`` is a commented example)::

    columns:
      patient_id: 病人ID        # required
      code: LOINC              # required: the LOINC code
      value: 结果               # required: a number (or <0.1, >200), else kept as text
      time: 采样时间             # required: when the specimen was taken
      display: 项目名称  unit: 单位  reference_range: 参考范围  flag: 提示
      status: 状态  id: 结果ID  specimen: 标本
    patient:                   # optional: publish a Patient per patient id
      name: 姓名  gender: 性别  birth_date: 出生日期  national_id: 身份证号

Every problem with a row is reported with its row number (as a spreadsheet shows it: the
header is row 1), the column and why; a row with a problem publishes nothing, the others
do. Problems with the mapping itself (unknown keys, a column the CSV does not have) are the
operator's (``MappingError``): nothing is published.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from hub.clock import CONSORTIUM_TZ
from hub.fhir import validate
from hub.mpi.demographics import NATIONAL_ID_SYSTEM

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REQUIRED = ("patient_id", "code", "value", "time")
OPTIONAL = ("display", "unit", "reference_range", "flag", "status", "id", "specimen")
PATIENT_KEYS = ("name", "gender", "birth_date", "national_id")
TOP_KEYS = ("columns", "patient", "delimiter", "encoding", "time_format", "values")
FLAGS = ("H", "HH", "L", "LL", "N", "A", "AA", "<", ">", "HU", "LU")
STATUSES = ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
            "entered-in-error", "unknown")
GENDERS = {"male": "male", "female": "female", "other": "other", "unknown": "unknown",
           "m": "male", "f": "female", "男": "male", "女": "female"}
_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]")
_NUMBER = re.compile(r"\s*(<=|>=|<|>)?\s*([-+]?\d+(?:\.\d+)?)\s*")
_LOINC = re.compile(r"^\d{1,7}-\d$")


class MappingError(ValueError):
    """The mapping or the CSV's header is wrong: the operator's mistake, not a row's."""


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    row: int          # as a spreadsheet numbers it (header = 1); for ndjson the line
    column: str       # the CSV column, or the FHIR element for JSON input
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Mapping:
    columns: dict[str, str]
    patient: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    time_format: str | None = None
    values: dict[str, dict[str, str]] = field(default_factory=dict)


def load_mapping(path: Path) -> Mapping:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read the mapping {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"the mapping {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), dict):
        raise MappingError(f"the mapping {path} needs a 'columns:' section naming the CSV "
                           f"columns for {', '.join(REQUIRED)}")
    if unknown := set(doc) - set(TOP_KEYS):
        raise MappingError(f"the mapping {path} has unknown keys {sorted(unknown)}; "
                           f"known: {', '.join(TOP_KEYS)}")
    cols, patient = doc["columns"], doc.get("patient") or {}
    if unknown := set(cols) - set(REQUIRED) - set(OPTIONAL):
        raise MappingError(f"the mapping's columns section has unknown keys {sorted(unknown)}; "
                           f"known: {', '.join(REQUIRED + OPTIONAL)}")
    if missing := [k for k in REQUIRED if not cols.get(k)]:
        raise MappingError(f"the mapping {path} does not say which column holds "
                           f"{', '.join(missing)} (columns: {' / '.join(missing)}: <header>)")
    if not isinstance(patient, dict) or (unknown := set(patient) - set(PATIENT_KEYS)):
        raise MappingError(f"the mapping's patient section may name {', '.join(PATIENT_KEYS)}")
    values = doc.get("values") or {}
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise MappingError("the mapping's values section maps a key (flag, status, gender) to "
                           "{exported value: FHIR value}")
    return Mapping({k: str(v) for k, v in cols.items() if v},
                   {k: str(v) for k, v in patient.items() if v},
                   str(doc.get("delimiter") or ","), str(doc.get("encoding") or "utf-8-sig"),
                   doc.get("time_format"),
                   {k: {str(a): str(b) for a, b in v.items()} for k, v in values.items()})


def fhir_id(value: str) -> str:
    return _ID_CHARS.sub("-", value.strip())[:64]


@dataclass
class Mapped:
    """The resources of one CSV row (its Patient first, the first time it is seen)."""

    row: int
    resources: list[dict[str, Any]]


def read_csv(path: Path, mapping: Mapping, facility: str, now: str
             ) -> Iterator[Mapped | RowError]:
    """Each data row's resources, or one RowError per problem with the row."""
    try:
        fh = path.open(encoding=mapping.encoding, newline="")
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from exc
    except LookupError as exc:
        raise MappingError(f"unknown encoding {mapping.encoding!r} in the mapping") from exc
    with fh:
        reader = csv.DictReader(fh, delimiter=mapping.delimiter)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError as exc:
            raise MappingError(f"{path} is not {mapping.encoding} text (set encoding: in the "
                               "mapping, e.g. gb18030)") from exc
        named = {**mapping.columns, **{f"patient.{k}": v for k, v in mapping.patient.items()}}
        if absent := {k: c for k, c in named.items() if c not in header}:
            raise MappingError(
                f"{path}: the mapping names columns the CSV does not have: "
                + ", ".join(f"{c!r} (for {k})" for k, c in absent.items())
                + f"; its header is: {', '.join(header)}")
        seen_patients: set[str] = set()
        row_no = 1
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                break
            except (UnicodeDecodeError, csv.Error) as exc:
                row_no += 1
                yield RowError(str(path), row_no, "", "", f"unreadable row: {exc}")
                continue
            row_no += 1
            row = {k: (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
            if not any(row.values()):
                continue  # a blank line at the end of an export
            out = _row(path, row_no, row, mapping, facility, now, seen_patients)
            if isinstance(out, list):
                yield from out
            else:
                yield out


def _row(path: Path, n: int, row: dict[str, str], m: Mapping, facility: str, now: str,
         seen_patients: set[str]) -> Mapped | list[RowError]:
    errors: list[RowError] = []
    col = m.columns

    def err(key: str, reason: str, column: str | None = None) -> None:
        name = column or col.get(key) or m.patient.get(key, key)
        errors.append(RowError(str(path), n, name, row.get(name, ""), reason))

    def cell(key: str) -> str:
        value = row.get(col[key], "") if key in col else ""
        return m.values.get(key, {}).get(value, value)

    pid_raw = cell("patient_id")
    pid = fhir_id(pid_raw)
    if not pid:
        err("patient_id", "the patient id is empty")
    code = cell("code")
    if not code:
        err("code", "the LOINC code is empty")
    elif not _LOINC.match(code):
        err("code", f"{code!r} is not a LOINC code (digits, a dash and a check digit, "
                    "e.g. 2345-7)")
    status = cell("status") or "final"
    if status not in STATUSES:
        err("status", f"status {status!r} is not one of {', '.join(STATUSES)} (map the "
                      "export's values under values: status:)")
    when = _time(cell("time"), m.time_format)
    if when is None:
        err("time", f"{cell('time')!r} is not a date/time"
                    + (f" in the format {m.time_format}" if m.time_format else
                       " (ISO 8601, e.g. 2026-11-01T07:30 or 2026-11-01 07:30)"))
    unit = cell("unit")
    value, value_text = _value(cell("value"), unit)
    if value is None and not value_text and \
            status not in ("cancelled", "entered-in-error", "registered"):
        err("value", f"the result is empty but the status is {status}")
    flag = cell("flag").upper()
    if flag and flag not in FLAGS:
        err("flag", f"flag {cell('flag')!r} is not one of {', '.join(FLAGS)} (map the "
                    "export's values under values: flag:)")
    rr = _range(cell("reference_range"), unit)
    if errors:
        return errors

    obs_id = fhir_id(cell("id")) if cell("id") else \
        fhir_id(f"{pid}-{code}-{re.sub(r'[^0-9]', '', when or '')[:14]}")
    coding = {"system": LOINC, "code": code, **({"display": d} if (d := cell("display"))
                                                 else {})}
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": obs_id,
        # lastUpdated: the export's time, so a corrected file sent later supersedes.
        "meta": {"lastUpdated": now}, "status": status,
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [coding], **({"text": coding["display"]}
                                        if "display" in coding else {})},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
        "performer": [{"reference": f"Organization/{facility}"}],
    }
    if value is not None:
        obs.update(value)
    elif value_text:
        obs["valueString"] = value_text
    if rr:
        obs["referenceRange"] = rr
    if flag:
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": flag}]}]
    if specimen := cell("specimen"):
        obs["specimen"] = {"display": specimen}
    resources = [obs]
    if m.patient and pid not in seen_patients:
        patient = _patient(pid, pid_raw, row, m, facility, now, err)
        if errors:
            return errors
        resources.insert(0, patient)
    for res in resources:
        for issue in validate(res):
            err("", issue.diagnostics, column=issue.location)
    if errors:
        return errors
    if m.patient:
        seen_patients.add(pid)
    return Mapped(n, resources)


def _patient(pid: str, raw_id: str, row: dict[str, str], m: Mapping, facility: str,
             now: str, err: Any) -> dict[str, Any]:
    def cell(key: str) -> str:
        value = row.get(m.patient[key], "") if key in m.patient else ""
        return m.values.get(key, {}).get(value, value)

    res: dict[str, Any] = {
        "resourceType": "Patient", "id": pid, "meta": {"lastUpdated": now},
        "identifier": [{"system": f"urn:hie:facility:{facility}:mrn", "value": raw_id}]}
    if nid := cell("national_id"):
        res["identifier"].append({"system": NATIONAL_ID_SYSTEM, "value": nid})
    if name := cell("name"):
        res["name"] = [{"text": name}]
    if g := cell("gender"):
        if g.lower() not in GENDERS:
            err("gender", f"gender {g!r} is not male, female, other or unknown (or M/F, 男/女)")
        else:
            res["gender"] = GENDERS[g.lower()]
    if b := cell("birth_date"):
        born = _time(b, None)
        if born is None:
            err("birth_date", f"{b!r} is not a date (YYYY-MM-DD)")
        else:
            res["birthDate"] = born[:10]
    return res


def _time(text: str, fmt: str | None) -> str | None:
    """RFC 3339; a time without an offset is consortium time (Asia/Shanghai)."""
    if not text:
        return None
    try:
        dt = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) <= 10 and not fmt and "T" not in text and ":" not in text:
        return dt.date().isoformat()  # a date alone stays a date
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CONSORTIUM_TZ)
    return dt.isoformat()


def _value(text: str, unit: str) -> tuple[dict[str, Any] | None, str]:
    if not text:
        return None, ""
    m = _NUMBER.fullmatch(text)
    if not m:
        return None, text  # 阴性, "positive", a titre: kept as text
    q: dict[str, Any] = {"value": float(m[2])}
    if m[1]:
        q["comparator"] = m[1]
    if unit:
        q.update({"unit": unit, "system": UCUM, "code": unit})
    return {"valueQuantity": q}, text


def _range(text: str, unit: str) -> list[dict[str, Any]]:
    """``3.9-6.1`` / ``3.9~6.1`` / ``<5.2`` / ``>1.0``; anything else (阴性, "negative")
    is kept as the range's text, as FHIR allows."""
    if not text:
        return []
    q = {"unit": unit, "system": UCUM, "code": unit} if unit else {}
    m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*[-~～]\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if m:
        return [{"low": {"value": float(m[1]), **q}, "high": {"value": float(m[2]), **q},
                 "text": text}]
    m = re.fullmatch(r"\s*(<=?|>=?|≤|≥)\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if m:
        side = "high" if m[1] in ("<", "<=", "≤") else "low"
        return [{side: {"value": float(m[2]), **q}, "text": text}]
    return [{"text": text}]
