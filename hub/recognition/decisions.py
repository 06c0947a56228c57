"""Recognition decisions as FHIR Tasks: recognised, or re-tested with a coded reason.

The receiving doctor decides. A re-test needs a reason from the value set
(``schemas/recognition-reasons.json``); ``other`` needs a text too. Some reasons do not count
as a non-recognition (the item is outside the catalogue, no recognisable result existed):
the statistics keep them apart.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from hub.fhir import unstorable_text
from hub.schemas import schema_file

SYSTEM = "urn:hie:recognition"
REASON_SYSTEM = "urn:hie:recognition:reason"
_CODES = json.loads(schema_file("recognition-reasons.json").read_text("utf-8"))
REASONS = {c["code"]: c["display"] for c in _CODES["concept"]}
COUNTS = {c["code"]: c["property"][0]["valueBoolean"] for c in _CODES["concept"]}


class DecisionError(ValueError):
    """A decision the rules refuse (the message says why)."""


@dataclass(frozen=True, slots=True)
class Decision:
    patient: str
    item: str
    outcome: str  # "recognised" or "retested"
    result: str | None = None  # the prior result recognised
    reason: str | None = None
    text: str | None = None


def decision_task(d: Decision, price_yuan: float, when: str) -> dict[str, Any]:
    text = (d.text or "").strip() or None  # FHIR strings may not be blank
    if any(unstorable_text(v, name) for name, v in (("text", text), ("item", d.item),
                                                    ("reason", d.reason)) if v):
        raise DecisionError("the decision holds a character no store can hold (NUL or a lone "
                            "surrogate); remove it")
    if d.outcome not in ("recognised", "retested"):
        raise DecisionError("decision must be 'recognised' or 'retested'")
    if d.outcome == "recognised" and not d.result:
        raise DecisionError("a recognition names the prior result it accepts (result)")
    if d.outcome == "retested":
        if not d.reason:
            raise DecisionError("a re-test needs a reason code: " + ", ".join(REASONS))
        if d.reason not in REASONS:
            raise DecisionError(f"unknown reason {d.reason!r}; one of: {', '.join(REASONS)}")
        if d.reason == "other" and not text:
            raise DecisionError("reason 'other' needs a text saying why")
    task: dict[str, Any] = {
        "resourceType": "Task", "id": f"rd-{uuid.uuid4().hex[:20]}", "status": "completed",
        "intent": "order", "authoredOn": when,
        "code": {"coding": [{"system": SYSTEM, "code": d.outcome}]},
        "for": {"reference": f"Patient/{d.patient}"},
        "input": [{"type": {"text": "item"}, "valueString": d.item},
                  {"type": {"text": "price-yuan"}, "valueDecimal": price_yuan}],
    }
    if d.result:
        task["focus"] = {"reference": d.result}
    if d.reason:
        task["reasonCode"] = {"coding": [{"system": REASON_SYSTEM, "code": d.reason,
                                          "display": REASONS[d.reason]}],
                              **({"text": text} if text else {})}
    return task


def read_decision(task: dict[str, Any]) -> tuple[str, str, float, str | None] | None:
    """(outcome, item, price, reason) of a decision Task; None for any other Task."""
    coding = next((c for c in (task.get("code") or {}).get("coding") or ()
                   if c.get("system") == SYSTEM), None)
    if coding is None or coding.get("code") not in ("recognised", "retested"):
        return None
    inputs = {i["type"].get("text"): i for i in task.get("input") or ()}
    item = (inputs.get("item") or {}).get("valueString")
    if not item:
        return None
    price = float((inputs.get("price-yuan") or {}).get("valueDecimal") or 0)
    reason = next((c.get("code") for c in (task.get("reasonCode") or {}).get("coding") or ()),
                  None)
    return coding["code"], item, price, reason
