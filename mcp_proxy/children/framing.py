"""The framing of a child's stdout: one message a line, and what a line over the cap leaves.

Owns cutting the bytes a stdio server writes into lines without copying them more than once,
dropping a line over the frame cap as it streams by, and finding in what is kept of such a
line (its first and last bytes) the id of the request it answers, where that id can be
trusted. It never parses a message, reads a pipe or delivers anything: ``process.py`` hands
it a ``read`` and is called back for each oversize line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

READ = 1 << 18  # at most this much of stdout is read ahead of the client
# Where an oversize answer's id can be trusted to be the top-level one (anything it echoes,
# e.g. a client's {"id": N} in a result, must not pick whose request fails): the first member
# (after "jsonrpc"), or the last member of an answer whose first member is its result or error.
_ID = rb'(-?\d+|"(?:[^"\\]|\\.){0,200}")'
_JSONRPC = rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?'
_LEADING_ID = re.compile(_JSONRPC + rb'"id"\s*:\s*' + _ID + rb'\s*,')
_ANSWER_FIRST = re.compile(_JSONRPC + rb'"(?:result|error)"\s*:')
_TRAILING_ID = re.compile(rb',\s*"id"\s*:\s*' + _ID + rb'\s*\}\s*\Z')
_TAIL = 256


def _first(pieces: list, size: int = 256) -> bytes:
    """The first ``size`` bytes of a line in pieces (where an oversize frame's id is)."""
    head = b""
    for piece in pieces:
        head += bytes(piece[:size - len(head)])
        if len(head) >= size:
            break
    return head


def lines(read: Callable[[int], bytes], cap: int,
          drop_oversize: Callable[[bytes, bytes, int], None]) -> Iterator[bytes]:
    """Each line of stdout without its newline (the last one even without it); one over
    ``cap`` bytes goes to ``drop_oversize(head, tail, size)`` as it streams by. Reads go
    straight from the pipe: a line is copied once, when its pieces are joined (a buffered
    ``readline`` copied it 4 times)."""
    parts: list = []  # the start of the line not ended yet
    size = 0
    head = None  # the first bytes of an oversize line being skipped
    tail = b""  # and its last bytes
    while True:
        chunk = read(READ)
        if not chunk:
            break
        start = 0
        end = chunk.find(b"\n")
        while end >= 0:
            size += end - start
            if head is not None or size > cap:
                if head is None:
                    head = _first([*parts, memoryview(chunk)[start:end]])
                    tail = b"".join(parts)[-_TAIL:]
                drop_oversize(head, (tail + chunk[max(start, end - _TAIL):end])[-_TAIL:],
                              size + 1)
            elif parts:
                parts.append(memoryview(chunk)[start:end])
                yield b"".join(parts)
            elif end > start:
                yield chunk[start:end]
            parts, size, head, tail = [], 0, None, b""
            start = end + 1
            end = chunk.find(b"\n", start)
        if start < len(chunk):
            size += len(chunk) - start
            if head is None:
                parts.append(chunk[start:] if start else chunk)
                if size > cap:  # keep only what finds its id
                    head, tail, parts = _first(parts), b"".join(parts)[-_TAIL:], []
            else:
                tail = (tail + chunk[max(start, len(chunk) - _TAIL):])[-_TAIL:]
    if head is not None:
        drop_oversize(head, tail, size)
    elif parts:
        yield b"".join(parts)


def oversize_id(head: bytes, tail: bytes) -> Any:
    """The id of the request a dropped oversize answer was for, from its first and last
    bytes; None unless it is sure (a request or notification of the server's has none)."""
    found = _LEADING_ID.match(head)
    if found is None and _ANSWER_FIRST.match(head):
        found = _TRAILING_ID.search(tail)
    if found and not re.match(_JSONRPC + rb'(?:"id"\s*:\s*' + _ID + rb'\s*,\s*)?"method"', head):
        return json.loads(found.group(1))
    return None
