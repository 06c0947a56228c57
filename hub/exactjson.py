"""JSON that keeps every number exactly as it was written.

FHIR decimals carry their precision in their spelling: ``1.00`` is not ``1.0``, and
``1.000000000000000000E-245`` is no float at all. orjson (the hub's parser on every hot
path) reads numbers as floats and writes them back in their shortest form, so a resource
that passed through it would be altered. Most resources hold only numbers that survive that
round trip unchanged; :func:`needs_exact` finds the others by comparing bytes, and only
those are parsed again by the standard library with every such number kept as an
``orjson.Fragment`` (its original text, written back verbatim by ``orjson.dumps``).

A dict from :func:`loads_faithful` is for building output (ids and references rewritten,
then ``orjson.dumps``), not for validation: a Fragment is not a number to fhir.resources.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# What numbers are made of, and the structure around them. orjson writes strings and
# structure back unchanged (whitespace aside), so if these bytes come out in the same order,
# every number literal came out as it went in. An escape inside a string (\u00e9 written
# back as the character) also differs: harmless, it only takes the exact path.
_KEPT = set(b"0123456789.eE+-,:[]{}")
_DROPPED = bytes(b for b in range(256) if b not in _KEPT)
# Integers orjson reads exactly: up to 64 bits. Longer ones (FHIR integers are 32-bit, but
# a decimal may be written without a point) are kept as text too.
_LONG_INT = 18
BOM = b"\xef\xbb\xbf"


def needs_exact(raw: bytes, parsed: Any) -> bool:
    """True when ``orjson.dumps(parsed)`` (``parsed`` = ``orjson.loads(raw)``) would write
    some number differently from ``raw``: trailing zeros, an exponent, more digits than a
    double holds. One byte translation of each side, a few microseconds a resource."""
    return raw.translate(None, _DROPPED) != orjson.dumps(parsed).translate(None, _DROPPED)


def _int(text: str) -> int | orjson.Fragment:
    return int(text) if len(text) <= _LONG_INT else orjson.Fragment(text)


def loads_exact(raw: bytes | str) -> Any:
    """``raw`` parsed with every fractional or exponent number kept as its own text."""
    return json.loads(raw, parse_float=orjson.Fragment, parse_int=_int)


def loads_faithful(raw: bytes) -> Any:
    """``raw`` parsed so that ``orjson.dumps`` writes every number back as it was: orjson's
    speed where nothing would change, :func:`loads_exact` where something would."""
    parsed = orjson.loads(raw)
    return loads_exact(raw) if needs_exact(raw, parsed) else parsed
