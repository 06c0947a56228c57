"""Resource ids from the whole identity of what they name.

An id is ``<readable part>-<digest>``: the readable part (the order number, the OBX set id)
lets an operator find a result by what the LIS shows; the digest, 16 hex digits of SHA-256
over every part of the identity, makes two different results two different ids. The
identity of a result is the sending facility (MSH-4), its order's filler number with the
assigning authority (else the placer's), the OBR set id, the OBX code (every coding), the
OBX sub-id (OBX-4), the OBX set id (OBX-1) and, for a repeat of all of these within one
order, its position among the repeats. The same result sent again — corrected, or resent
after a lost ACK — has the same identity, so it updates its Observation rather than adding
one; nothing about the patient is part of it, so that a result sent for another patient
under an id already used is caught (``hub.record.owners``) instead of filed apart.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from adapters.hl7v2.fields import fhir_id
from adapters.hl7v2.fields import field as text_field

DIGITS = 16


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:DIGITS]


def scoped_id(label: str, *identity: str) -> str:
    """``label`` made id-safe and cut to fit, then the digest of ``identity``."""
    head = re.sub(r"\.{2,}", ".", fhir_id(label, 64 - DIGITS - 1)).strip("-.") or "hl7"
    return f"{head}-{digest(*identity)}"


def order_label(obr: Any, control: str) -> str:
    """The number a LIS operator knows the order by: filler's, else placer's."""
    return text_field(obr, 3, 0) or text_field(obr, 2, 0) or f"{control}-{text_field(obr, 1)}"


def result_id(order: str, set_id: str, report_id: str, *identity: str) -> str:
    """An Observation's id: ``<order>-<OBX-1>-<digest>``, the digest over the report's id
    (which holds the order's identity) and the result's own."""
    label = f"{fhir_id(order, 30).strip('-.')}-{fhir_id(set_id, 8) or 'x'}"
    return scoped_id(label, report_id, *identity)
