"""HL7 v2 -> FHIR R4B: ORU^R01 (lab results) and ADT^A01/A04/A08 (patients).

Parsing with python-hl7; everything else is plain functions. A message that cannot be
mapped raises :class:`Hl7Refused` with the acknowledgement code (``AR``: the message itself
is unacceptable — truncated, unknown type or version; ``AE``: a content error — an OBX
without a value, a patient without identifiers) and a reason a LIS operator can act on.
Nothing is mapped in part: a message becomes all of its resources or none.

Ids come from the whole identity of what they name (``adapters.hl7v2.ids``), so two results
of one message never share an id, and the same result sent again (corrected, say) keeps it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import hl7

from adapters.hl7v2.coded import coded, codes, reference_range, unit_of
from adapters.hl7v2.fields import comp, first, hl7_time, reps, sub, unescape
from adapters.hl7v2.fields import field as text_field
from adapters.hl7v2.ids import order_label, result_id, scoped_id
from adapters.hl7v2.patient import PatientRefused, address, patient, patient_id
from adapters.hl7v2.values import VALUE_ATTACHMENT, ValueRefused, observation_value
from hub import clock
from hub.clock import CONSORTIUM_TZ

VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ADT_EVENTS = ("A01", "A04", "A08")
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_NOTE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
OBX_STATUS = {"F": "final", "P": "preliminary", "R": "preliminary", "S": "preliminary",
              "C": "corrected", "X": "cancelled", "D": "entered-in-error",
              "W": "entered-in-error", "I": "registered", "U": "final"}
OBR_STATUS = {"F": "final", "P": "preliminary", "C": "corrected", "A": "partial",
              "X": "cancelled", "I": "registered", "O": "registered", "S": "registered",
              "R": "preliminary"}
FLAGS = {"H", "HH", "L", "LL", "N", "A", "AA", "<", ">", "HU", "LU", "S", "R", "I", "POS",
         "NEG", "IND", "DET", "ND"}
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class Hl7Refused(Exception):
    def __init__(self, code: str, reason: str, control_id: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.control_id = control_id


@dataclass
class Mapped:
    message_type: str
    control_id: str
    sending_facility: str
    version: str
    resources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Group:
    """One OBR with what follows it: its notes, its OBXs (each with its notes), its SPMs."""

    obr: Any
    notes: list[Any] = field(default_factory=list)
    results: list[tuple[Any, list[Any]]] = field(default_factory=list)
    specimens: list[Any] = field(default_factory=list)


@dataclass
class _Context:
    facility: str
    sender: str
    control: str
    sent: str
    tz: tzinfo
    patient_ref: str
    out: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def add(self, res: dict[str, Any]) -> dict[str, Any]:
        key = f"{res['resourceType']}/{res['id']}"
        if key not in self.ids:  # an Organization named by several OBXs is one resource
            self.ids.add(key)
            self.out.append(res)
        return res


def check_header(msg: Any) -> tuple[str, str, str, str, str]:
    """(type, trigger, control id, sending facility, version) or Hl7Refused."""
    try:
        msh = msg.segment("MSH")
    except KeyError as exc:
        raise Hl7Refused("AR", "not an HL7 v2 message: no MSH segment") from exc
    if len(msh) < 13:
        raise Hl7Refused("AR", "truncated message: MSH ends before MSH-12 (version)")
    control = text_field(msh, 10)
    mtype, trigger = text_field(msh, 9, 0), text_field(msh, 9, 1)
    version = text_field(msh, 12, 0) or text_field(msh, 12)
    if version not in VERSIONS:
        raise Hl7Refused("AR", f"unsupported HL7 version {version!r}; accepted: "
                         f"{', '.join(VERSIONS)}", control)
    for seg in msg:
        if not _SEGMENT_ID.match(str(seg[0])):
            raise Hl7Refused("AR", f"truncated or garbled message: segment {str(seg)[:20]!r} "
                             "has no segment id", control)
    return mtype, trigger, control, text_field(msh, 4, 0) or text_field(msh, 4), version


def map_message(text: str, facility: str, tz: tzinfo = CONSORTIUM_TZ,
                senders: Collection[str] = ()) -> Mapped:
    """Map one HL7 v2 message from ``facility`` to FHIR resources (facility-local ids).

    ``tz`` is the facility's zone, for times sent without an offset; ``senders`` the names
    its systems put in MSH-4 besides the facility id (the registry's ``hl7_names``)."""
    if not text.lstrip().startswith("MSH"):
        raise Hl7Refused("AR", "not an HL7 v2 message: it must start with MSH")
    try:
        msg = hl7.parse(text.replace("\n", "\r").strip("\r"))
    except (hl7.ParseException, IndexError, ValueError) as exc:
        raise Hl7Refused("AR", f"cannot parse the message: {exc}") from exc
    mtype, trigger, control, sender, version = check_header(msg)
    if sender and sender != facility and sender not in senders:
        also = f" or {', '.join(repr(s) for s in sorted(senders))}" if senders else ""
        raise Hl7Refused("AR", f"MSH-4 sending facility {sender!r} is not {facility!r}{also}, "
                         "the facility this listener speaks for", control)
    sent = hl7_time(text_field(msg.segment("MSH"), 7), tz) or \
        clock.now().astimezone(tz).isoformat()
    mapped = Mapped(f"{mtype}^{trigger}", control, sender or facility, version)
    try:
        if mtype == "ORU" and trigger == "R01":
            mapped.resources = _oru(msg, facility, sender or facility, control, sent, tz)
        elif mtype == "ADT" and trigger in ADT_EVENTS:
            mapped.resources = [patient(msg.segment("PID"), facility, sent, tz)]
        else:
            raise Hl7Refused("AR", f"unsupported message type {mtype}^{trigger}; accepted: "
                             f"ORU^R01, ADT^{'/'.join(ADT_EVENTS)}", control)
    except PatientRefused as exc:
        raise Hl7Refused("AE", str(exc), control) from exc
    except Hl7Refused as exc:
        exc.control_id = exc.control_id or control
        raise
    except KeyError as exc:
        raise Hl7Refused("AE", f"{mtype}^{trigger} needs a {exc.args[0]} segment",
                         control) from exc
    return mapped


def _groups(segments: list[Any]) -> list[_Group]:
    groups: list[_Group] = []
    for seg in segments:
        sid = str(seg[0])
        if sid == "OBR":
            groups.append(_Group(seg))
        elif sid in ("OBX", "NTE", "SPM") and not groups:
            if sid == "OBX":
                raise Hl7Refused("AE", "OBX before any OBR: results need their order")
        elif sid == "OBX":
            groups[-1].results.append((seg, []))
        elif sid == "NTE":
            group = groups[-1]
            (group.results[-1][1] if group.results and not group.specimens
             else group.notes).append(seg)
        elif sid == "SPM":
            groups[-1].specimens.append(seg)
    return groups


def _patients(msg: Any) -> list[tuple[Any, list[_Group]]]:
    """An ORU^R01 may report on several patients, each PID followed by its orders: every
    order belongs to the PID before it, never to the message's first patient."""
    sections: list[tuple[Any, list[Any]]] = []
    for seg in msg:
        sid = str(seg[0])
        if sid == "PID":
            sections.append((seg, []))
        elif sections:
            sections[-1][1].append(seg)
        elif sid == "OBR":
            raise Hl7Refused("AE", "OBR before any PID: whose results these are is not said")
    if not sections:
        raise KeyError("PID")
    return [(pid, _groups(segments)) for pid, segments in sections]


def _oru(msg: Any, facility: str, sender: str, control: str, sent: str,
         tz: tzinfo) -> list[dict[str, Any]]:
    patients = _patients(msg)
    if not any(groups for _, groups in patients):
        raise Hl7Refused("AE", "ORU^R01 without an OBR segment")
    if not any(g.results for _, groups in patients for g in groups):
        raise Hl7Refused("AE", "ORU^R01 without any OBX result")
    ctx = _Context(facility, sender, control, sent, tz, "")
    orders: Counter[tuple[str, str]] = Counter()
    for pid, groups in patients:
        ctx.patient_ref = f"Patient/{patient_id(pid)}"
        ctx.add(patient(pid, facility, sent, tz))
        for group in groups:
            # OBRs of one order told apart by OBR-1; a repeat of both (no set ids, say) by
            # its position among the repeats, so no report swallows another's results
            order = (_order_identity(group.obr, control), text_field(group.obr, 1))
            orders[order] += 1
            _report(group, ctx, *order, str(orders[order]))
    return ctx.out


def _note(segments: list[Any]) -> list[dict[str, str]]:
    """NTE-3 of consecutive NTEs -> one Annotation, line by line as the lab laid it out."""
    lines = [unescape(str(s[3]) if len(s) > 3 else "").replace("~", "\n") for s in segments]
    text = "\n".join(lines).strip("\n")
    return [{"text": text}] if text.strip() else []


def _report(group: _Group, ctx: _Context, *identity: str) -> None:
    obr = group.obr
    order = order_label(obr, ctx.control)
    report_id = scoped_id(order, ctx.sender, *identity)
    effective = hl7_time(text_field(obr, 7, 0), ctx.tz) or ctx.sent
    issued = hl7_time(text_field(obr, 22, 0), ctx.tz) or ctx.sent
    specimens = [_specimen(s, i, report_id, ctx) for i, s in enumerate(group.specimens, 1)]
    specimen_ref = specimens[0] if specimens else _obr_specimen(obr)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": report_id,
        "meta": {"lastUpdated": ctx.sent},
        "status": OBR_STATUS.get(text_field(obr, 25).upper(), "final"),
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": coded(obr[4]) if len(obr) > 4 and coded(obr[4]) else
        {"text": "laboratory report"},
        "subject": {"reference": ctx.patient_ref},
        "effectiveDateTime": effective, "issued": issued, "result": [],
    }
    if identifiers := _order_identifiers(obr):
        report["identifier"] = identifiers
    if specimens:
        report["specimen"] = [{"reference": s["reference"]} for s in specimens]
    if note := _note(group.notes):
        report["extension"] = [{"url": REPORT_NOTE, "valueAnnotation": note[0]}]
    seen: Counter[tuple[str, ...]] = Counter()
    performers: list[dict[str, str]] = []
    for obx, notes in group.results:
        obs = _observation(obx, notes, report_id, order, seen, effective, issued,
                           specimen_ref, ctx)
        for p in obs["performer"]:
            if p not in performers:
                performers.append(p)
        report["result"].append({"reference": f"Observation/{obs['id']}"})
        for ext in obs.get("extension", []):
            if ext["url"] == VALUE_ATTACHMENT:  # a document result: the report presents it
                title = obs["code"].get("text")
                report.setdefault("presentedForm", []).append(
                    {**ext["valueAttachment"], **({"title": title} if title else {})})
    report["performer"] = performers or [_facility_performer(ctx)]
    if not report["result"]:  # an OBR without OBX (another OBR of the message has them)
        del report["result"]
    ctx.add(report)


def _order_identity(obr: Any, control: str) -> str:
    """What names the order: the filler's number with its assigning authority (OBR-3),
    else the placer's (OBR-2), else the message (no number at all: nothing to match)."""
    for n, kind in ((3, "filler"), (2, "placer")):
        if text_field(obr, n, 0):
            return f"{kind}:{first(obr[n])}"
    return f"message:{control}"


def _order_identifiers(obr: Any) -> list[dict[str, Any]]:
    out = []
    for n, code in ((3, "FILL"), (2, "PLAC")):
        if not text_field(obr, n, 0):
            continue
        rep = first(obr[n])
        ident: dict[str, Any] = {"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]},
            "value": comp(rep, 0)}
        if system := _authority(comp(rep, 1), comp(rep, 2), comp(rep, 3)):
            ident["system"] = system
        out.append(ident)
    return out


def _authority(namespace: str, universal: str, kind: str) -> str | None:
    """An HD (namespace^universal id^type) as a URI: ``urn:oid:`` for an ISO OID."""
    if universal and kind.upper() == "ISO" and re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+",
                                                             universal):
        return f"urn:oid:{universal}"
    if namespace or universal:
        return f"urn:hie:hl7v2:{namespace or universal}"
    return None


def _obr_specimen(obr: Any) -> dict[str, str] | None:
    """Before SPM (v2.3-2.4): OBR-15 specimen source, as text."""
    source = first(obr[15]) if len(obr) > 15 else ""
    name = comp(source, 1) or comp(source, 0)
    return {"display": unescape(name)} if name else None


def _specimen(spm: Any, n: int, report_id: str, ctx: _Context) -> dict[str, str]:
    """SPM -> Specimen; returns the reference an Observation carries."""
    ident = str(first(spm[2])) if len(spm) > 2 else ""
    number = (sub(first(spm[2]), 1, 0) or sub(first(spm[2]), 0, 0)) if ident else ""
    sid = scoped_id(f"spm-{number}" if number else "spm", ctx.sender,
                    f"specimen:{ident}" if ident.strip("^&")
                    else f"{report_id}:{text_field(spm, 1)}:{n}")
    kind = coded(spm[4]) if len(spm) > 4 else {}
    res: dict[str, Any] = {"resourceType": "Specimen", "id": sid,
                           "meta": {"lastUpdated": ctx.sent},
                           "subject": {"reference": ctx.patient_ref}}
    ids = []
    for i, code in ((0, "PLAC"), (1, "FILL")):
        value = sub(first(spm[2]), i, 0) if len(spm) > 2 else ""
        if value:
            ids.append({"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]},
                "value": value})
    if ids:
        res["identifier"] = ids
    if kind:
        res["type"] = kind
    collection: dict[str, Any] = {}
    start = hl7_time(comp(first(spm[17]), 0), ctx.tz) if len(spm) > 17 else None
    end = hl7_time(comp(first(spm[17]), 1), ctx.tz) if len(spm) > 17 else None
    if start and end:
        collection["collectedPeriod"] = {"start": start, "end": end}
    elif start:
        collection["collectedDateTime"] = start
    if len(spm) > 8 and (site := coded(spm[8])):
        collection["bodySite"] = site
    if collection:
        res["collection"] = collection
    if len(spm) > 18 and (received := hl7_time(text_field(spm, 18, 0), ctx.tz)):
        res["receivedTime"] = received
    conditions = [coded(r) for r in (reps(spm, 24) if len(spm) > 24 else []) if coded(r)]
    if conditions:
        res["condition"] = conditions
    ctx.add(res)
    ref = {"reference": f"Specimen/{sid}"}
    display = kind.get("text") or next((c.get("display") for c in kind.get("coding", [])
                                        if c.get("display")), None)
    return {**ref, "display": display} if display else ref


def _facility_performer(ctx: _Context) -> dict[str, str]:
    """No performing organization named: the sending facility performed the test. Its own
    Organization travels with the message, so the reference resolves in the record."""
    ctx.add({"resourceType": "Organization", "id": ctx.facility,
             "meta": {"lastUpdated": ctx.sent},
             "identifier": [{"system": "urn:hie:facility", "value": ctx.facility}],
             "name": ctx.sender})
    return {"reference": f"Organization/{ctx.facility}"}


def _performers(obx: Any, ctx: _Context) -> list[dict[str, str]]:
    """The sending facility, answerable for the result (first: the lab projection and mutual
    recognition read the facility there, for its tier and EQA passes), then the performing
    organization of OBX-23 (XON) with OBX-24 its address (v2.5.1), when named."""
    facility = _facility_performer(ctx)
    xon = first(obx[23]) if len(obx) > 23 else ""
    name, number = unescape(comp(xon, 0)), comp(xon, 9) or comp(xon, 2)
    if not name and not number:
        return [facility]
    authority = _authority(sub(xon, 5, 0), sub(xon, 5, 1), sub(xon, 5, 2))
    oid = scoped_id(f"lab-{number or name}", ctx.sender, f"org:{authority}|{number}|{name}")
    org: dict[str, Any] = {"resourceType": "Organization", "id": oid,
                           "meta": {"lastUpdated": ctx.sent}}
    if number:
        org["identifier"] = [{"value": number, **({"system": authority} if authority else {}),
                              **({"type": {"text": comp(xon, 6)}} if comp(xon, 6) else {})}]
    if name:
        org["name"] = name
    if len(obx) > 24 and (where := address(first(obx[24]))):
        org["address"] = [where]
    ctx.add(org)
    return [facility, {"reference": f"Organization/{oid}"}]


def _observation(obx: Any, notes: list[Any], report_id: str, order: str,
                 seen: Counter[tuple[str, ...]], effective: str, issued: str,
                 specimen: dict[str, str] | None, ctx: _Context) -> dict[str, Any]:
    vtype = text_field(obx, 2).upper()
    set_id = text_field(obx, 1)
    code = coded(obx[3]) if len(obx) > 3 else {}
    label = f"OBX {set_id or '?'} ({code.get('text') or ', '.join(codes(code)) or 'no code'})"
    status_code = text_field(obx, 11).upper()
    status = OBX_STATUS.get(status_code)
    if status is None:
        raise Hl7Refused("AE", f"{label}: unknown result status OBX-11 {status_code!r}; "
                         "expected F, P, C, X, D, W, R, I or S")
    # The result's identity within its order: code, sub-id, set id; a repeat of all three
    # in one order (a sender's slip) is told apart by its position among the repeats.
    identity = (*(codes(code) or [code.get("text", "")]), text_field(obx, 4), set_id)
    seen[identity] += 1
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": result_id(order, set_id, report_id, *identity, str(seen[identity])),
        "meta": {"lastUpdated": ctx.sent}, "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": code or {"text": label}, "subject": {"reference": ctx.patient_ref},
        "effectiveDateTime": hl7_time(text_field(obx, 14, 0), ctx.tz) or effective,
        "issued": issued,
        "performer": _performers(obx, ctx),
    }
    if specimen:
        obs["specimen"] = specimen
    unit, ucum = unit_of(obx[6]) if len(obx) > 6 else ("", None)
    present = len(obx) > 5 and str(obx[5]).strip() != ""
    if not present and status not in ("cancelled", "entered-in-error", "registered"):
        raise Hl7Refused("AE", f"{label} has no value (OBX-5 is empty) but status "
                         f"{status_code}")
    if present:
        try:
            obs.update(observation_value(vtype, obx[5], unit, ucum, ctx.tz))
        except ValueRefused as exc:
            raise Hl7Refused("AE", f"{label}: {exc}") from exc
    if rr := reference_range(text_field(obx, 7), unit, ucum):
        obs["referenceRange"] = rr
    flags = [f for f in (comp(r, 0) for r in reps(obx, 8)) if f]
    if flags:
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": f}]}
                                 for f in flags if f.upper() in FLAGS] or \
            [{"text": ",".join(flags)}]
    if note := _note(notes):
        obs["note"] = note
    return ctx.add(obs)
