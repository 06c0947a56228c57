"""The base specification's rules that fhir.resources' models do not check (FHIR R4).

Hand-written rather than evaluated as FHIRPath: one walk over the resource dict checks the
element rules everywhere, costing a few microseconds, where a FHIRPath engine costs a
millisecond or more per resource. Each finding is ``(location, "<key>: message")`` with the
invariant's key from the specification (``per-1``, ``txt-1``, ...):

* ``id``: a resource id (a contained one, an element's id) is 1-64 of ``[A-Za-z0-9-.]``,
  not only dots;
* ``ele-1``: every element has a value or children (no ``""``, ``{}``, ``[]``, ``null``);
* ``str-1``: a string is at most 1 MB (1,048,576 characters);
* ``per-1``: a Period's start is not after its end;
* ``ref-1``: a local reference (``#x``) names a contained resource;
* ``txt-1``/``txt-2``: narrative is XHTML of the basic elements, with no script, event
  attributes, active links (``javascript:``), styles that fetch or run (``url()``), or
  images from another host: every member facility renders it; and it has some content;
* ``dom-2``..``dom-5``: contained resources hold no contained resources, are referenced,
  carry no versionId, lastUpdated or security labels;
* ``obs-6``/``obs-7``: an Observation has a value or a dataAbsentReason, not both, and no
  value when a component has the Observation's own code.

The Bundle rules (``bdl-*``) are the gateway's: ``hub.ingest.bundle``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

from hub.record.rules import utc_instant

Found = list[tuple[str, str]]

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_STRING = 1024 * 1024
# Base64 content is no FHIR string (its own limit is the body's).
_BINARY = frozenset({"data"})
_XHTML = "{http://www.w3.org/1999/xhtml}"
# The elements FHIR narrative may use (R4, Narrative: txt-1).
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TAGS = _words("""a abbr acronym b big blockquote br caption cite code col colgroup dd dfn
div dl dt em h1 h2 h3 h4 h5 h6 hr i img li ol p pre q samp small span strong sub sup table
tbody td tfoot th thead tr tt ul var""")
_ATTRIBUTES = _words("""id class lang title href name src alt width height colspan rowspan
align valign border cellpadding cellspacing summary scope headers abbr axis char charoff
span dir frame rules start type value xmlns style""")
# A link may go anywhere a person chooses to follow (relative, http, mailto, ...), but may
# not run anything.
_ACTIVE_LINK = re.compile(r"^\s*(?:javascript|vbscript|data|file)\s*:", re.I)
# An image is fetched by every reader's browser: only a contained one, inline data, or a
# path on the reader's own server; never another host (a scheme, or //host).
_REMOTE_IMAGE = re.compile(r"^\s*(?://|[A-Za-z][A-Za-z0-9+.\-]*:(?!image/))", re.I)
_IMAGE_DATA = re.compile(r"^\s*data:image/", re.I)
# Inline style may format, not fetch or run: url(...), @import, expression(), behaviors.
_ACTIVE_STYLE = re.compile(r"url\s*\(|@import|expression\s*\(|behavior\s*:|javascript:", re.I)
_DATETIME = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?"
                       r"(?:\.\d+)?)?)?)?")
_VALUE = "value"


def is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(ID.match(value)) and value.strip(".") != ""


def invariant_issues(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """Every broken invariant in ``resource``, located like ``Observation.effectivePeriod``."""
    found: Found = []
    _resource(resource, str(resource.get("resourceType")), resource, found, top=True)
    return found


def _resource(res: dict[str, Any], path: str, container: dict[str, Any], found: Found,
              top: bool = False) -> None:
    rid = res.get("id")
    if rid is not None and not is_id(rid):
        found.append((f"{path}.id", _not_an_id(rid)))
    contained = res.get("contained")
    if isinstance(contained, list):
        _contained(res, contained, path, top, found)
    text = res.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        found.extend(narrative_issues(text["div"], f"{path}.text.div"))
    if res.get("resourceType") == "Observation":
        _observation(res, path, found)
    _walk(res, path, container, found)


def _not_an_id(value: Any) -> str:
    return (f"id: {str(value)[:80]!r} is not an id (1-64 characters of A-Z a-z 0-9 - ., "
            "not only dots)")


def _contained(res: dict[str, Any], contained: list, path: str, top: bool, found: Found
               ) -> None:
    used = _local_references(res, skip="contained")
    for i, c in enumerate(contained):
        if not isinstance(c, dict):
            continue
        where = f"{path}.contained[{i}]"
        if not top or c.get("contained"):
            found.append((where, "dom-2: a contained resource cannot contain resources"))
        meta = c.get("meta") if isinstance(c.get("meta"), dict) else {}
        if "versionId" in meta or "lastUpdated" in meta:
            found.append((f"{where}.meta", "dom-4: a contained resource has no "
                                           "meta.versionId or meta.lastUpdated"))
        if "security" in meta:
            found.append((f"{where}.meta.security", "dom-5: a contained resource has no "
                                                    "security labels"))
        # dom-3: referenced from the container, or referring to it ("#")
        if f"#{c.get('id')}" not in used and "#" not in _local_references(c):
            found.append((where, f"dom-3: contained resource #{c.get('id')} is referenced "
                                 "from nowhere in the resource"))


def _local_references(value: Any, skip: str | None = None) -> set[str]:
    out: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            ref = v.get("reference")
            if isinstance(ref, str) and ref.startswith("#"):
                out.add(ref)
            stack.extend(x for k, x in v.items() if k != skip)
        elif isinstance(v, list):
            stack.extend(v)
    return out


_EMPTY = "ele-1: an element has a value or children, not "


def _walk(value: Any, path: str, container: dict[str, Any], found: Found,
          nulls_ok: bool = False) -> None:
    # The hot path of validation: plain type tests, no generators, one call per element.
    if type(value) is dict:
        if not value:
            found.append((path, _EMPTY + "{}"))
            return
        ref = value.get("reference")
        if type(ref) is str and ref[:1] == "#" and len(ref) > 1:
            contained = container.get("contained")  # model validation judges its shape
            ids = {f"#{c.get('id')}" for c in contained if isinstance(c, dict)
                   } if isinstance(contained, list) else set()
            if ref not in ids:
                found.append((f"{path}.reference", f"ref-1: {ref} names no contained resource"))
        if "start" in value:
            start, end = value["start"], value.get("end")
            if type(start) is str and type(end) is str and _after(start, end):
                found.append((path, f"per-1: the period's start ({start}) is not before its "
                                f"end ({end}) at the precision both have"))
        nested = "resourceType" in value
        for k, v in value.items():
            t = type(v)
            if t is str:
                if not v:
                    found.append((f"{path}.{k}", _EMPTY + '""'))
                elif len(v) > MAX_STRING and k not in _BINARY:
                    found.append((f"{path}.{k}", f"str-1: a string is at most 1 MB "
                                  f"({MAX_STRING} characters); this one has {len(v)}"))
                elif k == "id" and not nested and not is_id(v):
                    found.append((f"{path}.{k}", _not_an_id(v)))
            elif t is dict and "resourceType" in v:  # a resource inside an element
                _resource(v, f"{path}.{k}", container, found)
            elif t is dict or t is list:
                # Lists of primitives and their "_x" extension lists pad each other with null.
                _walk(v, f"{path}.{k}", container, found,
                      k[0] == "_" or f"_{k}" in value)
            elif v is None:
                found.append((f"{path}.{k}", _EMPTY + "null"))
    elif type(value) is list:
        if not value:
            found.append((path, _EMPTY + "[]"))
            return
        for i, v in enumerate(value):
            t = type(v)
            if t is dict:
                if "resourceType" in v:  # contained
                    _resource(v, f"{path}[{i}]", container, found)
                else:
                    _walk(v, f"{path}[{i}]", container, found)
            elif t is list:
                _walk(v, f"{path}[{i}]", container, found)
            elif t is str:
                if not v:
                    found.append((f"{path}[{i}]", _EMPTY + '""'))
                elif len(v) > MAX_STRING:
                    found.append((f"{path}[{i}]", f"str-1: a string is at most 1 MB "
                                  f"({MAX_STRING} characters); this one has {len(v)}"))
            elif v is None and not nulls_ok:
                found.append((f"{path}[{i}]", _EMPTY + "null"))


def _parts(value: str) -> tuple[int, ...]:
    m = _DATETIME.match(value)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


def _after(start: str, end: str) -> bool:
    """Whether ``start`` is after ``end`` at the precision both have, or cannot be told to
    come first (FHIRPath: comparing 2020 with 2020-03 is undecided, and an invariant that
    is not true fails)."""
    a, b = _parts(start), _parts(end)
    if not a or not b:
        return False
    if len(a) > 3 and len(b) > 3:  # both have a time (and so, in FHIR, an offset)
        return utc_instant(start) > utc_instant(end)
    n = min(len(a), len(b))
    # Equal at the precision both have, but one more precise: which comes first cannot be
    # told, and HL7's validator refuses that too (2023-06-21 .. 2023-06-21T06:20:00Z).
    return a[:n] > b[:n] or (a[:n] == b[:n] and len(a) != len(b))


def _observation(res: dict[str, Any], path: str, found: Found) -> None:
    has_value = any(k.startswith(_VALUE) and k != "valueSet" for k in res)
    if has_value and res.get("dataAbsentReason") is not None:
        found.append((f"{path}.dataAbsentReason", "obs-6: dataAbsentReason only where there "
                                                  "is no value[x]"))
    if not has_value:
        return
    own = _codings(res.get("code"))
    for i, comp in enumerate(res.get("component") or ()):
        if isinstance(comp, dict) and own & _codings(comp.get("code")):
            found.append((f"{path}.component[{i}].code", "obs-7: a component has the "
                          "Observation's own code, so the Observation has no value"))


def _codings(concept: Any) -> set[tuple[Any, Any]]:
    if not isinstance(concept, dict):
        return set()
    return {(c.get("system"), c.get("code")) for c in concept.get("coding") or ()
            if isinstance(c, dict)}


def narrative_issues(div: str, path: str) -> Iterator[tuple[str, str]]:
    """txt-1 and txt-2 on one narrative ``div``."""
    if "<!" in div or "<?" in div:
        # No DOCTYPE, entities or processing instructions: they expand or fetch.
        yield (path, "txt-1: narrative may not hold a DOCTYPE, entity or processing "
                     "instruction")
        return
    try:
        root = ElementTree.fromstring(div)
    except ElementTree.ParseError as exc:
        yield (path, f"txt-1: narrative is not well-formed XHTML: {exc}")
        return
    if root.tag != f"{_XHTML}div":
        yield (path, "txt-1: narrative is a <div> in the XHTML namespace "
                     "(xmlns=\"http://www.w3.org/1999/xhtml\")")
        return
    has_image = False
    for el in root.iter():
        tag = el.tag.removeprefix(_XHTML) if isinstance(el.tag, str) else ""
        if tag not in _TAGS:
            yield (path, f"txt-1: <{tag}> is not allowed in narrative (no scripts, forms, "
                         "frames, objects or styles)")
            continue
        for name, value in el.attrib.items():
            local = name.rpartition("}")[2].lower()
            if local.startswith("on") or local not in _ATTRIBUTES:
                yield (path, f"txt-1: attribute {local!r} on <{tag}> is not allowed in "
                             "narrative (no event handlers)")
            elif local == "href" and _ACTIVE_LINK.match(value):
                yield (path, f"txt-1: link {value[:80]!r} on <{tag}> is not allowed "
                             "(no javascript:, data: or other active links)")
            elif local == "src" and _REMOTE_IMAGE.match(value) and not _IMAGE_DATA.match(value):
                yield (path, f"txt-1: image source {value[:80]!r} would be fetched from "
                             "another host by every reader: use a contained or data: image")
            elif local == "style" and _ACTIVE_STYLE.search(value):
                yield (path, f"txt-1: style {value[:80]!r} on <{tag}> fetches or runs "
                             "something (url(), @import, expression()); only formatting")
        has_image = has_image or tag == "img"
    if not has_image and not "".join(root.itertext()).strip():
        yield (path, "txt-2: narrative has some non-whitespace content")
