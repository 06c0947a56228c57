"""Lab results over FHIR search: ``Observation?patient=&code=&date=&_sort=&_count=``,
``DiagnosticReport?patient=&category=LAB``, and a patient's lab summary."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import QueryParams

from hub.access.rules import may_read_patient, readable_facilities
from hub.api.consent_check import refused_by_consent, withheld_links
from hub.api.deps import ContextDep, HubContext, LabReaderDep
from hub.api.guard import audit, forbidden
from hub.api.outcome import FhirResponse, error
from hub.imaging import read as imaging_read
from hub.lab import read as lab_read
from hub.lab.read import SearchError
from hub.mpi.service import linked_records
from hub.record.read import present_row

router = APIRouter(prefix="/fhir", tags=["lab results"])
LAB_CATEGORIES = {"laboratory", "http://terminology.hl7.org/CodeSystem/observation-category|"
                  "laboratory"}
REPORT_CATEGORIES = {"LAB", "http://terminology.hl7.org/CodeSystem/v2-0074|LAB"}
EXT_NORMALISED = "urn:hie:ext:normalised-value"
IMAGING_CATEGORIES = {"imaging", "RAD", "http://terminology.hl7.org/CodeSystem/v2-0074|RAD",
                      "EC", "http://terminology.hl7.org/CodeSystem/v2-0074|EC"}


def _annotated(row: Any) -> dict:
    """The Observation as sent, with hub ids, plus what the hub derived from it."""
    res = present_row(row)
    ext = list(res.get("extension") or ())
    if row["value_norm"] is not None:
        ext.append({"url": EXT_NORMALISED, "valueQuantity": {
            "value": row["value_norm"], "unit": row["unit_norm"],
            "system": "http://unitsofmeasure.org", "code": row["unit_norm"]}})
    if row["flag"] and not res.get("interpretation"):
        res["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": row["flag"]}], "text": "derived from the reference range"}]
    if ext:
        res["extension"] = ext
    return res


def imaging_reports(params: QueryParams) -> bool:
    """Whether a DiagnosticReport search asks for imaging and ECG reports (not lab ones)."""
    categories = set(params.getlist("category"))
    return bool(categories) and categories <= IMAGING_CATEGORIES


def lab_search(ctx: HubContext, rtype: str, params: QueryParams, keys: list[str] | None,
               count: int, offset: int, facilities: frozenset[str] | None,
               excluded: Collection[str] = ()) -> tuple[int, list[tuple[dict, str]]]:
    if rtype == "DiagnosticReport":
        categories = set(params.getlist("category"))
        if imaging_reports(params):
            return imaging_read.search_reports(ctx.store, keys, count, offset, facilities,
                                               excluded)
        if not categories <= REPORT_CATEGORIES:
            raise SearchError("category: DiagnosticReport search supports category=LAB "
                              "(laboratory) or category=imaging (imaging and ECG reports)")
        total, rows = lab_read.search_reports(ctx.store, keys, count, offset, facilities,
                                              excluded)
        return total, [(present_row(r), r["patient_key"]) for r in rows]
    if not set(params.getlist("category")) <= LAB_CATEGORIES:
        raise SearchError("category: Observation search here supports category=laboratory")
    codes = [c for p in params.getlist("code") for c in lab_read.parse_codes(p)]
    dates = [b for p in params.getlist("date") for b in lab_read.parse_date(p)]
    sort = params.get("_sort", "-date")
    if sort not in ("date", "-date"):
        raise SearchError("_sort: date or -date")
    total, rows = lab_read.search_results(ctx.store, keys, codes, dates, sort == "-date",
                                          count, offset, facilities, excluded)
    return total, [(_annotated(r), r["patient_key"]) for r in rows]


@router.get("/Patient/{pid}/$lab-summary")
def lab_summary(pid: str, ctx: ContextDep, reader: LabReaderDep) -> FhirResponse:
    """Per analyte, across every facility: the latest result with its flag and source
    facility, and the trend in one unit."""
    key = pid.rstrip("/").split("/")[-1]
    if not may_read_patient(reader, key):
        audit(ctx, reader, "read", f"Patient/{key}/$lab-summary", {key}, "4")
        return forbidden(f"{reader.kind} {reader.id} may not read patients of "
                         f"{key.partition('.')[0]}")
    withheld = withheld_links(ctx, reader, key)
    if refused := refused_by_consent(ctx, reader, key, "read", f"Patient/{key}/$lab-summary",
                                     withheld=withheld):
        return refused
    # Without the linked records elsewhere that a consent keeps the reader out of.
    keys = [k for k in linked_records(ctx.store, key) if k not in withheld]
    analytes = lab_read.summary(ctx.store, keys, readable_facilities(reader))
    audit(ctx, reader, "read", f"Patient/{key}/$lab-summary", set(keys))
    if not analytes and not keys:
        return error(404, f"no lab results for {key}", "not-found")
    return FhirResponse({"patient": f"Patient/{key}", "records": keys, "analytes": [{
        "analyte": a["analyte"], "display": a["display"], "count": a["count"],
        "latest": {k: a["latest"][k] for k in (
            "id", "loinc", "effective", "status", "value_num", "value_text", "unit",
            "value_norm", "unit_norm", "flag", "flag_source", "ref_low", "ref_high",
            "specimen", "performer")},
        "trend": a["trend"]} for a in analytes]})
