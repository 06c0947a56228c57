"""The prior results a recognition check looks at, from the lab and imaging projections."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hub.imaging.projection import REPORTS, STUDIES, ImagingProjection
from hub.lab.projection import RESULTS, LabProjection
from hub.recognition.rules import PriorResult
from hub.store.db import Store

_LAB = LabProjection().tables(sa.MetaData())[RESULTS]
_IMG = ImagingProjection().tables(sa.MetaData())


def prior_results(store: Store, patient_keys: Sequence[str], loinc: Sequence[str],
                  want_imaging: bool) -> list[PriorResult]:
    keys = list(patient_keys)
    out: list[PriorResult] = []
    with store.connect() as conn:
        if loinc:
            for row in conn.execute(
                    sa.select(_LAB.c.id, _LAB.c.performer, _LAB.c.effective, _LAB.c.status,
                              _LAB.c.loinc, _LAB.c.value_num, _LAB.c.unit, _LAB.c.value_text)
                    .where(_LAB.c.patient_key.in_(keys), _LAB.c.loinc.in_(list(loinc)),
                           _LAB.c.effective.is_not(None))):
                value = f"{row.value_num:g} {row.unit or ''}".strip() \
                    if row.value_num is not None else row.value_text
                out.append(PriorResult(row.id, "lab", row.performer or row.id.split(".")[0],
                                       row.effective, row.status, loinc=row.loinc,
                                       value=value))
        if want_imaging:
            s, r = _IMG[STUDIES], _IMG[REPORTS]
            for row in conn.execute(
                    sa.select(s.c.study_id, s.c.facility, s.c.started, s.c.arrived,
                              s.c.modality, s.c.description, s.c.body, r.c.status)
                    .select_from(s.outerjoin(r, r.c.study_id == s.c.study_id))
                    .where(s.c.patient_key.in_(keys))):
                body = orjson.loads(row.body)
                sites = " ".join(
                    str((se.get("bodySite") or {}).get("display") or
                        (se.get("bodySite") or {}).get("code") or "")
                    for se in body.get("series") or ())
                out.append(PriorResult(
                    row.study_id, "imaging", row.facility, row.started or row.arrived,
                    row.status or "not reported", modality=tuple(row.modality.split(",")),
                    site_text=f"{row.description or ''} {sites}"))
    return out
