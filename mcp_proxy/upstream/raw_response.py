"""RawResponse: an HTTP/1.1 response read off a socket, for the fast path of client mode's
POSTs.

It reads the head at once (skipping 1xx) and the body on demand, framed by chunked
Transfer-Encoding, Content-Length or the end of the connection (RFC 9112 section 6.3), and
looks like the part of ``requests.Response`` the upstreams use: ``status_code``, ``reason``,
``headers``, ``content``, ``text``, ``json()``, ``raw.read1`` and ``close``. When the body
was read whole from a connection that stays open, ``close`` hands the connection back for
the next POST; otherwise it is closed. It never decodes a Content-Encoding: the fast path
asks for ``identity`` where it reads a body.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from requests.compat import chardet
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from mcp_proxy.core.http1 import FIELD_NAME
from mcp_proxy.errors import BrokenResponse

MAX_HEAD = 64 << 10
READ = 65536


class RawResponse:
    """One response; ``release(reuse)`` is called once, when it is closed."""

    def __init__(self, sock, release: Callable[[bool], None]) -> None:
        self._sock = sock
        self._release = release
        self._buf = bytearray()
        self._content: bytes | None = None
        self._after_chunk = False  # the CRLF that ends a chunk's data is still to come
        try:
            self._read_head()
            while 100 <= self.status_code < 200 and self.status_code != 101:
                self._read_head()  # 100 Continue, 103 Early Hints: the response follows
            self._framing()
        except BaseException:
            self._done = False
            self.close()
            raise

    @property
    def raw(self) -> RawResponse:
        """Itself, read as a requests response's ``raw`` is (http_reading.events); a property,
        not an attribute naming itself, so a response leaves no cycle behind."""
        return self

    # --- the head ---------------------------------------------------------------------------

    def _line(self, where: str = "chunks") -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end]).rstrip(b"\r")
                del self._buf[:end + 1]
                return line
            if len(self._buf) > MAX_HEAD:
                raise BrokenResponse(where)
            self._fill(where)

    def _fill(self, where: str) -> None:
        data = self._sock.recv(READ)
        if not data:
            raise BrokenResponse(where)
        self._buf += data

    def _head_lines(self) -> list[str]:
        """The lines of the next head, taken out of the buffer with the empty line after."""
        while True:
            ends = [at for at in (self._buf.find(b"\n\r\n"), self._buf.find(b"\n\n")) if at >= 0]
            if ends:
                break
            if len(self._buf) > MAX_HEAD:
                raise BrokenResponse("head")
            self._fill("head")
        end = min(ends)
        if end > MAX_HEAD:
            raise BrokenResponse("head")
        lines = self._buf[:end].decode("latin-1").split("\n")
        del self._buf[:end + (3 if self._buf[end + 1] == 13 else 2)]
        return [line.removesuffix("\r") for line in lines]

    def _read_head(self) -> None:
        status, *fields = self._head_lines()
        version, _, rest = status.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BrokenResponse("head")
        self.status_code = int(code)
        self.reason = reason.strip()
        self.header_list: list[tuple[str, str]] = []
        self.headers: CaseInsensitiveDict = CaseInsensitiveDict()
        for line in fields:
            name, colon, value = line.partition(":")
            if not colon or FIELD_NAME.fullmatch(name) is None:
                raise BrokenResponse("head")
            value = value.strip()
            self.header_list.append((name, value))
            known = self.headers.get(name)
            self.headers[name] = value if known is None else f"{known}, {value}"
        self._keep = version == "HTTP/1.1" \
            and "close" not in self.headers.get("Connection", "").lower()

    def _framing(self) -> None:
        self._chunked = False
        self._left: int | None = None  # body bytes still to come; None: until the end
        if self.status_code in (101, 204, 304):
            self._left = 0
            self._keep = self._keep and self.status_code != 101
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._chunked, self._left = True, 0
        elif "Content-Length" in self.headers:
            length = self.headers["Content-Length"]
            if not length.isdigit():
                raise BrokenResponse("head")
            self._left = int(length)
        else:
            self._keep = False  # the body ends with the connection
        self._done = self._left == 0 and not self._chunked

    # --- the body ---------------------------------------------------------------------------

    def read1(self, size: int = READ) -> bytes:
        """Up to ``size`` bytes of the body (at least one unless it has ended: then b"")."""
        if self._done:
            return b""
        if self._chunked and self._left == 0:
            self._next_chunk()
            if self._done:
                return b""
        if not self._buf:
            if self._left is None:
                data = self._sock.recv(READ)
                if not data:
                    self._done = True
                return data
            self._fill("chunks" if self._chunked else "body")
        take = min(size, len(self._buf)) if self._left is None \
            else min(size, len(self._buf), self._left)
        data = bytes(self._buf[:take])
        del self._buf[:take]
        if self._left is not None:
            self._left -= take
            if self._left == 0 and not self._chunked:
                self._done = True
        return data

    def _next_chunk(self) -> None:
        if self._after_chunk and self._line("chunks"):
            raise BrokenResponse("chunks")
        self._after_chunk = True
        size = self._line("chunks").split(b";", 1)[0].strip()
        try:
            self._left = int(size, 16)
        except ValueError:
            raise BrokenResponse("chunks") from None
        if self._left == 0:
            while self._line("chunks"):  # trailer fields, up to the empty line
                pass
            self._done = True

    @property
    def content(self) -> bytes:
        if self._content is None:
            parts = []
            while chunk := self.read1(1 << 20):
                parts.append(chunk)
            self._content = b"".join(parts)
        return self._content

    @property
    def text(self) -> str:
        """The body decoded as ``requests.Response.text`` decodes it: the Content-Type's
        charset, else the one charset detection guesses."""
        content = self.content
        if not content:
            return ""
        encoding = get_encoding_from_headers(self.headers)
        if encoding is None:
            encoding = chardet.detect(content)["encoding"] if chardet is not None else "utf-8"
        try:
            return str(content, encoding or "utf-8", errors="replace")
        except (LookupError, TypeError):
            return str(content, errors="replace")

    def json(self):
        return json.loads(self.content)

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self._done and self._keep and not self._buf)

    def __enter__(self) -> RawResponse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
