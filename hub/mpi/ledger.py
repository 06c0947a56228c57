"""Who belongs to whom: consortium persons and the facility records linked to them.

Pure state and rules. Every change is expressed as new versions of FHIR resources: a
``Person`` (its full set of linked records: state, not a delta, so folding the log needs no
reads) and a ``Task`` for a review. The ledger applies its own output with the same
:func:`fold` a projection uses, so what the service decides and what a rebuild reproduces
cannot drift apart.

Every record belongs to exactly one person. Linking a record to a person merges the record's
own person into it; unlinking gives the record a new person of its own again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EXT_DECIDED = "urn:hie:ext:mpi-decided"
EXT_ACTION = "urn:hie:ext:mpi-action"
MPI_SYSTEM = "urn:hie:mpi"
REVIEW_KINDS = ("review", "conflict")


def person_id(record_key: str, seq: int) -> str:
    """Deterministic: the same decision, re-made after a crash, names the same person."""
    return "p-" + hashlib.sha256(f"{record_key}|{seq}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Review:
    id: str
    kind: str  # "review" (grey zone) or "conflict" (same ID, different sex/birth date)
    record: str
    candidate_person: str
    candidate_record: str
    score: float
    reasons: tuple[str, ...]
    status: str = "requested"  # requested | completed (linked) | rejected (kept apart)
    decided_by: str | None = None


@dataclass
class Ledger:
    persons: dict[str, set[str]] = field(default_factory=dict)  # active person -> records
    person_of: dict[str, str] = field(default_factory=dict)  # record -> person
    merged_into: dict[str, str] = field(default_factory=dict)  # inactive person -> survivor
    reviews: dict[str, Review] = field(default_factory=dict)
    seq: int = 0

    # --- reading -------------------------------------------------------------------------
    def partition(self) -> frozenset[frozenset[str]]:
        """Which records are together, whatever the persons are called."""
        return frozenset(frozenset(r) for r in self.persons.values() if r)

    def records_with(self, record_key: str) -> set[str]:
        p = self.person_of.get(record_key)
        return set(self.persons.get(p, ())) if p else {record_key}

    # --- deciding: each returns the resources to publish (already applied here) -----------
    def ensure(self, record: str, decided: str | None = None, note: str = "new") -> list[dict]:
        """Give ``record`` a person of its own if it has none (and mark a decision)."""
        if record in self.person_of:
            if decided is None:
                return []
            p = self.person_of[record]
            return self._emit([self._person(p, decided=[decided], action=note)])
        self.seq += 1
        p = person_id(record, self.seq)
        return self._emit([self._person(p, {record}, decided=[decided] if decided else [],
                                        action=note)])

    def link(self, record: str, into: str, decided: str | None = None,
             note: str = "link") -> list[dict]:
        """Put ``record`` (with the rest of its person) into person ``into``."""
        out = self.ensure(record)
        source = self.person_of[record]
        return out + self.merge(into, source, decided=decided, note=note)

    def merge(self, survivor: str, merged: str, decided: str | None = None,
              note: str = "merge") -> list[dict]:
        if survivor == merged:
            raise ValueError("a person cannot be merged into itself")
        for p in (survivor, merged):
            if p not in self.persons:
                raise KeyError(f"no active person {p!r}")
        records = self.persons[survivor] | self.persons[merged]
        return self._emit([
            self._person(survivor, records, decided=[decided] if decided else [], action=note),
            self._person(merged, set(), merged_into=survivor, action=note),
        ])

    def unlink(self, record: str, note: str = "unlink") -> list[dict]:
        """Take ``record`` out of its person; it gets a person of its own."""
        p = self.person_of.get(record)
        if p is None:
            raise KeyError(f"no record {record!r} in the index")
        rest = self.persons[p] - {record}
        if not rest:
            return []  # already alone
        self.seq += 1
        own = person_id(record, self.seq)
        return self._emit([self._person(p, rest, action=note),
                           self._person(own, {record}, action=note)])

    def open_review(self, kind: str, record: str, candidate_person: str,
                    candidate_record: str, score: float, reasons: Iterable[str]) -> list[dict]:
        self.seq += 1
        review = Review(f"rv-{self.seq}", kind, record, candidate_person, candidate_record,
                        round(score, 3), tuple(reasons))
        return self._emit([task_resource(review, self.seq)])

    def close_review(self, review_id: str, link: bool, by: str) -> list[dict]:
        r = self.reviews.get(review_id)
        if r is None:
            raise KeyError(f"no review {review_id!r}")
        if r.status != "requested":
            raise ValueError(f"review {review_id} is already {r.status}")
        out: list[dict] = []
        if link:
            # The candidate may have been merged since the review opened: follow it.
            target = self.survivor(r.candidate_person)
            if self.person_of.get(r.record) != target:
                out += self.link(r.record, target, note=f"review {review_id} confirmed")
        self.seq += 1
        closed = Review(r.id, r.kind, r.record, r.candidate_person, r.candidate_record,
                        r.score, r.reasons, "completed" if link else "rejected", by)
        return out + self._emit([task_resource(closed, self.seq)])

    def survivor(self, person: str) -> str:
        seen = set()
        while person in self.merged_into and person not in seen:
            seen.add(person)
            person = self.merged_into[person]
        return person

    # --- resources -------------------------------------------------------------------------
    def _person(self, pid: str, records: set[str] | None = None, decided: list[str] = (),
                merged_into: str | None = None, action: str = "") -> dict:
        self.seq += 1
        records = self.persons.get(pid, set()) if records is None else records
        res: dict[str, Any] = {
            "resourceType": "Person", "id": pid, "meta": {"versionId": str(self.seq)},
            "active": merged_into is None,
            "link": [{"target": {"reference": f"Patient/{r}"}, "assurance": "level3"}
                     for r in sorted(records)]}
        if merged_into is not None:
            res["link"] = [{"target": {"reference": f"Person/{merged_into}"},
                            "assurance": "level4"}]
        ext = [{"url": EXT_ACTION, "valueString": action or "update"}]
        ext += [{"url": EXT_DECIDED, "valueString": d} for d in decided if d]
        res["extension"] = ext
        return res

    def _emit(self, resources: list[dict]) -> list[dict]:
        fold_into(self, resources)
        return resources


def task_resource(r: Review, seq: int) -> dict:
    task: dict[str, Any] = {
        "resourceType": "Task", "id": r.id, "meta": {"versionId": str(seq)},
        "status": r.status, "intent": "proposal",
        "code": {"coding": [{"system": MPI_SYSTEM, "code": r.kind}]},
        "focus": {"reference": f"Patient/{r.record}"},
        "for": {"reference": f"Person/{r.candidate_person}"},
        "input": [
            {"type": {"text": "candidate-record"}, "valueString": r.candidate_record},
            {"type": {"text": "score"}, "valueDecimal": r.score},
            *({"type": {"text": "reason"}, "valueString": x} for x in r.reasons)],
    }
    if r.decided_by:
        task["owner"] = {"display": r.decided_by}
    return task


def review_of(task: dict) -> Review:
    inputs = task.get("input", [])
    get = {i["type"]["text"]: i for i in inputs}
    return Review(
        task["id"], task["code"]["coding"][0]["code"],
        task["focus"]["reference"].split("/", 1)[1],
        task["for"]["reference"].split("/", 1)[1],
        get["candidate-record"]["valueString"], float(get["score"]["valueDecimal"]),
        tuple(i["valueString"] for i in inputs if i["type"]["text"] == "reason"),
        task["status"], (task.get("owner") or {}).get("display"))


def person_records(person: dict) -> list[str]:
    return [ln["target"]["reference"].split("/", 1)[1] for ln in person.get("link", [])
            if ln["target"]["reference"].startswith("Patient/")]


def decided_of(person: dict) -> list[str]:
    return [e["valueString"] for e in person.get("extension", []) if e["url"] == EXT_DECIDED]


def fold_into(ledger: Ledger, resources: Iterable[dict]) -> None:
    """Apply published resources, in log order, to a ledger (what a projection does)."""
    for res in resources:
        seq = int(res["meta"]["versionId"])
        ledger.seq = max(ledger.seq, seq)
        if res["resourceType"] == "Task":
            ledger.reviews[res["id"]] = review_of(res)
            continue
        pid = res["id"]
        if not res.get("active", True):
            target = res["link"][0]["target"]["reference"].split("/", 1)[1]
            ledger.merged_into[pid] = target
            ledger.persons.pop(pid, None)
            continue
        records = set(person_records(res))
        ledger.merged_into.pop(pid, None)
        ledger.persons[pid] = records
        for r in records:
            ledger.person_of[r] = pid
        if not records:
            ledger.persons.pop(pid, None)


def fold(resources: Iterable[dict]) -> Ledger:
    ledger = Ledger()
    fold_into(ledger, resources)
    return ledger
