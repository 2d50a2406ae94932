"""JSON text to Python objects, refusing what JSON parsers read differently (I-JSON, RFC 7493).

The relay forwards a message's bytes as they arrived and routes by what it parsed, so the two
must mean the same thing to every peer. Refused with :class:`AmbiguousJson`:

- a member name twice in one object, at any depth and in any spelling (``"id"`` and
  ``"\\u0069d"``): parsers keep the first, the last or fail, and a splice of the id
  (``jsonrpc.with_id``) would edit one copy while the peer reads the other;
- a string holding a lone surrogate (``"\\ud800"``): kept, replaced or refused, by parser.

Syntax errors, NaN and numbers out of range raise ``ValueError`` as ``json`` does.

Two parsers, one verdict, one parse. A small message goes through the standard library, with
an ``object_pairs_hook`` that sees every member. A large one goes through orjson (several times
faster on a large string), which keeps the last duplicate silently; its tree is checked
without parsing again: the members in the bytes are counted from the positions of the quotes
(found by ``bytes.find``, i.e. memchr), the members in the tree by a walk, and any duplicate
makes the first count larger. A large message with over ``_FEW_QUOTES`` quotes, where that
check would cost more than orjson saves, goes to the standard library before orjson runs; one
with few quotes but over ``_FEW_VALUES`` values (a long array of numbers) is parsed by it again
once the walk gives up: the only case of two parses of an accepted message.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from mcp_proxy.errors import AmbiguousJson

FAST_ABOVE = 32 << 10  # orjson above this size
_FEW_QUOTES = 1024  # a large message with more goes the standard library's way
_FEW_VALUES = 4096  # (so does one whose tree is this big: e.g. a long array of numbers)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _unique(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        for name, _ in pairs:
            if name in seen:
                raise AmbiguousJson(f"duplicate member {json.dumps(name)[:80]} in one object")
            seen.add(name)
    return obj


_checked = json.JSONDecoder(parse_float=finite_float, parse_constant=reject_constant,
                            object_pairs_hook=_unique)
_plain = json.JSONDecoder(parse_float=finite_float, parse_constant=reject_constant)
_scan = _checked.scan_once


def reread(text: str) -> Any:
    """Parse text that ``loads`` has accepted before."""
    return _plain.decode(text)


def loads(data: bytes | str) -> Any:
    """Parse one JSON text; raise :class:`AmbiguousJson`, ``UnicodeDecodeError``, ``ValueError``
    or ``RecursionError``."""
    obj = fast(data) if isinstance(data, bytes) and len(data) > FAST_ABOVE else None
    if obj is not None:
        return obj
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    obj = _parse(text)
    if "\\" in text and _SURROGATE_ESCAPE.search(text):
        try:  # only where the text escapes a surrogate: a pair is fine, a lone one is not
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise AmbiguousJson("a string holds a lone surrogate (\\ud800-\\udfff)") from None
    return obj


def _parse(text: str) -> Any:
    try:  # the scanner itself: JSONDecoder.decode adds two regex calls for whitespace
        obj, end = _scan(text, 0)
        if end == len(text) or not text[end:].strip(" \t\n\r"):
            return obj
    except StopIteration:
        pass
    try:  # whitespace before the value, or an error to be told
        return _checked.decode(text)
    except ValueError:
        if text.startswith("\ufeff"):  # RFC 8259 §8.1: a parser MAY ignore it, or refuse
            raise ValueError("a byte order mark (BOM) before the JSON text") from None
        raise


def fast(data: bytes) -> Any:
    """orjson's parse, or None where the standard library must decide: whatever orjson
    refuses (a lone surrogate, an integer past 64 bits; the standard library then gives the
    error or its reading), a float where routing reads an integer, and text whose member
    count is not cheap to check or shows a duplicate (the standard library names it)."""
    quotes = _quotes(data)
    if quotes is None:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    members = _members(obj)
    if members is None or members != _keys(data, quotes):
        return None
    if isinstance(obj, dict) and _float_routed(obj):
        return None
    return obj


def _quotes(data: bytes) -> list[int] | None:
    """Where the quote characters are (None if there are too many to look at each)."""
    found, at = [], data.find(b'"')
    while at >= 0:
        if len(found) == _FEW_QUOTES:
            return None
        found.append(at)
        at = data.find(b'"', at + 1)
    return found


def _keys(data: bytes, quotes: list[int]) -> int:
    """How many member names valid JSON ``data`` holds: unescaped quotes alternate between
    opening and closing a string, and a name is a string followed by a colon."""
    names, closing, end = 0, False, len(data)
    for at in quotes:
        back = at
        while back and data[back - 1] == 0x5C:  # backslash
            back -= 1
        if (at - back) % 2:
            continue  # an escaped quote, inside a string
        if closing:
            after = at + 1
            while after < end and data[after] in b" \t\n\r":
                after += 1
            names += after < end and data[after] == 0x3A  # colon
        closing = not closing
    return names


def _members(obj: Any) -> int | None:
    """How many members the objects of a parsed tree hold (None past ``_FEW_VALUES``)."""
    count, seen, stack = 0, 0, [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            count += len(value)
            seen += len(value)
            stack.extend(value.values())
        elif kind is list:
            seen += len(value)
            stack.extend(value)
        if seen > _FEW_VALUES:
            return None
    return count


ROUTING_PARAMS = ("requestId", "progressToken", "_meta", "requestState")


def _float_routed(obj: dict) -> bool:
    """Whether a value routing reads (id, a cancel's requestId, ``_meta``, an error's code)
    is a float: a JSON integer past 64 bits would have been an int."""
    params = obj.get("params")
    error = obj.get("error")
    routed = [obj.get("id"), error.get("code") if isinstance(error, dict) else None]
    if isinstance(params, dict):
        routed += [params.get(key) for key in ROUTING_PARAMS]
    while routed:
        value = routed.pop()
        if isinstance(value, float):
            return True
        if isinstance(value, dict):
            routed.extend(value.values())
        elif isinstance(value, list):
            routed.extend(value)
    return False
