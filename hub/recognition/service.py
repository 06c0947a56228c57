"""One recognition check, from the stores: the patient's linked records, their prior
results for the ordered items, and the rules. Shared by the API, the prompter and the
benchmark, so what is measured is what is served."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date

from hub.mpi.service import linked_records
from hub.recognition import read as rec_read
from hub.recognition.rules import Catalogue, Verdict, check
from hub.registry.model import FacilityRecord
from hub.store.db import Store


def run_check(store: Store, registry: dict[str, FacilityRecord], catalogue: Catalogue,
              patient_key: str, items: Sequence[str], ordered: date,
              allowed: frozenset[str] | None = None, excluded: Collection[str] = ()
              ) -> tuple[list[str], list[Verdict]]:
    """(the patient's records that were looked at, a verdict per item); never the
    ``excluded`` records (a consent keeps the reader out of them)."""
    wanted = [catalogue.item(c) for c in items]
    loinc = [code for it in wanted if it for code in it.loinc]
    imaging = any(it and it.category != "lab" for it in wanted)
    keys = [k for k in linked_records(store, patient_key)
            if (allowed is None or k.partition(".")[0] in allowed) and k not in excluded]
    results = rec_read.prior_results(store, keys, loinc, imaging)
    return keys, check(catalogue, items, results, registry, ordered)
