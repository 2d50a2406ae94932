"""Strict HTTP/1.1 request parsing (RFC 9112) for the pywsgi handler: request line, header
fields and the framing headers; it raises ``BadHttpRequest`` for anything it refuses.

pywsgi's own parser goes through ``email.parser`` (an eighth of the proxy's CPU per request)
and lets through what a front proxy may read differently (whitespace before a colon, folded
lines, two Content-Lengths, Transfer-Encoding beside Content-Length): the classic ways to
smuggle a request. The whole head is checked with one precompiled regex; finding out what
exactly was wrong is left to the error path.
"""

from __future__ import annotations

import re

from mcp_proxy.errors import BadHttpRequest

MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/1\.([0-9])\r\n")
# field-name ":" OWS field-value OWS CRLF; the value has no control characters but HTAB
_FIELD_RE = rf"{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n"
_FIELD = re.compile(_FIELD_RE)
_HEAD = re.compile(f"(?:{_FIELD_RE})*".encode("latin-1"))
FIELD_NAME = re.compile(_TOKEN)
_SINGLE = frozenset(("host", "content-length", "transfer-encoding"))
def request_line(line: str) -> tuple[str, str, str]:
    """(method, target, version) of a request line; any HTTP/1.x but 1.0 counts as 1.1."""
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise BadHttpRequest("malformed request line")
    method, target, minor = match.groups()
    return method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1"


def _field_error(lines: list[bytes]) -> str:
    """What is wrong with the first bad header line (the slow path, errors only)."""
    line = next(text for text in (line.decode("latin-1") for line in lines)
                if _FIELD.fullmatch(text) is None)
    if line[0] in " \t":
        return "obsolete line folding (a header line starting with whitespace)"
    if not line.endswith("\r\n") or "\r" in line[:-2]:
        return "a header line not ended by CRLF, or a bare CR or LF in it"
    name, colon, _ = line.partition(":")
    if not colon:
        return "a header line without a colon"
    if name != name.rstrip(" \t"):
        return "whitespace between a header name and its colon"
    if FIELD_NAME.fullmatch(name) is None:
        return "an invalid character in a header name"
    return "a control character in a header value"


class Headers:
    """Request headers read straight off the connection and checked in one regex pass.

    Keeps the small interface pywsgi uses (``get``, ``getheader``, ``headers``,
    ``typeheader``, ``status``). Host, Content-Length and Transfer-Encoding may appear once.
    """

    __slots__ = ("status", "headers", "fields", "_values")

    def __init__(self, rfile) -> None:
        self.status = ""
        lines: list[bytes] = []
        while True:
            line = rfile.readline(MAX_HEADER_LINE + 1)
            size = len(line)
            if size <= 2:  # the shortest field is "a:\r\n"
                if line == b"\r\n":
                    break
                raise BadHttpRequest("the connection ended inside the headers" if not line
                                   else "a header line not ended by CRLF, or a bare CR or LF in it")
            if size > MAX_HEADER_LINE:
                raise BadHttpRequest("header line too long", 431)
            if len(lines) == MAX_HEADERS:
                raise BadHttpRequest("too many headers", 431)
            lines.append(line)
        head = b"".join(lines)
        if _HEAD.fullmatch(head) is None:
            raise BadHttpRequest(_field_error(lines))
        self.headers = head.decode("latin-1").split("\r\n")
        self.headers.pop()  # after the last CRLF
        self.fields: list[tuple[str, str]] = []  # (lower-case name, value) in order
        self._values: dict[str, str] = {}
        values = self._values
        for line in self.headers:
            name, _, value = line.partition(":")
            name = name.lower()
            value = value.strip(" \t")
            self.fields.append((name, value))
            if name not in values:
                values[name] = value
            elif name in _SINGLE:
                raise BadHttpRequest(f"more than one {name} header")

    def get(self, name: str, default=None):
        return self._values.get(name.lower(), default)

    getheader = get

    @property
    def typeheader(self):
        return self._values.get("content-type")


def body_framing(headers: Headers, version: str) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request; refuses every ambiguous or unknown framing."""
    if headers.get("host") is None and version != "HTTP/1.0":
        raise BadHttpRequest("an HTTP/1.1 request without a Host header")
    length = headers.get("content-length")
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if length is not None:
            raise BadHttpRequest("both Transfer-Encoding and Content-Length")
        if coding.lower() != "chunked" or version == "HTTP/1.0":
            raise BadHttpRequest("a Transfer-Encoding other than chunked, or one in HTTP/1.0")
        return None, True
    if length is None:
        return None, False
    if not (length.isascii() and length.isdigit()) or len(length) > 18:
        raise BadHttpRequest("a Content-Length that is not a number (of at most 18 digits)")
    return int(length), False
