"""The hand-rolled HTTP/1.1 client of the bench: one blocking socket, no library.

``HttpConn`` is one keep-alive HTTP/1.1 connection to the proxy (TCP_NODELAY, a bounded
timeout on every socket operation): it sends requests and reads heads, Content-Length and
chunked bodies. ``SseEvents`` reads the events of a chunked ``text/event-stream`` body,
and ``parse_event`` parses one event block; both avoid copying and rescanning big events,
so a 10 MiB answer costs the client side of a round trip as little as it can.
"""

from __future__ import annotations

import socket

from procs import BenchError

HOST = "127.0.0.1"
IO_TIMEOUT = 30.0  # no single socket/pipe operation of the bench may block longer


class HttpConn:
    """One keep-alive HTTP/1.1 connection over a blocking socket."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.host = f"{HOST}:{port}".encode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise BenchError("connection closed by the proxy")
        self.buf += data

    def read_until(self, delim: bytes, limit: int = 1 << 16) -> bytes:
        start = 0
        while True:
            idx = self.buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise BenchError(f"no {delim!r} in {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            self._fill()

    def read_exact(self, n: int) -> bytes:
        if len(self.buf) >= n:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        out = bytearray(n)
        have = len(self.buf)
        out[:have] = self.buf
        self.buf.clear()
        view = memoryview(out)
        while have < n:
            got = self.sock.recv_into(view[have:], min(n - have, 1 << 22))
            if not got:
                raise BenchError("connection closed by the proxy")
            have += got
        return bytes(out) if n <= 65536 else out  # big: skip one copy (bytes-like is fine)

    def send_request(self, method: str, path: str, headers: dict[str, str] | None = None,
                     body: bytes | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}".encode())
        if body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if body is not None and len(body) <= 65536:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            if body:
                self.sock.sendall(body)

    def read_head(self) -> tuple[int, dict[str, str]]:
        head = self.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        return status, headers

    def read_chunk(self) -> bytes | None:
        """One chunk of a chunked body; None at the last chunk."""
        line = self.read_until(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            self.read_until(b"\r\n")  # no trailers from pywsgi
            return None
        data = self.read_exact(size)
        if self.read_exact(2) != b"\r\n":
            raise BenchError("bad chunk framing")
        return data

    def read_body(self, headers: dict[str, str]) -> bytes:
        """The body of a response whose head ``read_head`` returned."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (chunk := self.read_chunk()) is not None:
                parts.append(chunk)
            return b"".join(parts)
        return self.read_exact(int(headers.get("content-length", "0")))

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.read_head()
        body = self.read_body(headers)
        if headers.get("connection", "").lower() == "close":
            raise BenchError(f"proxy closed the keep-alive connection (status {status})")
        return status, headers, body


class SseEvents:
    """Events of a chunked ``text/event-stream`` body, comments (pings) skipped.

    Written not to copy or rescan big events: bytes.find of a one-byte needle is memchr,
    of two bytes (``\\n\\n``) a much slower two-way search, and a 10 MiB event would pay
    for it on the client's side of the round trip.
    """

    def __init__(self, conn: HttpConn) -> None:
        self.conn = conn
        self.pending = bytearray()
        self.scan = 0

    def next(self) -> tuple[bytes, bytes]:
        while True:
            idx, sep = _boundary(self.pending, self.scan)
            if idx >= 0:
                block = bytes(self.pending[:idx])
                del self.pending[:idx + sep]
                self.scan = 0
                event = parse_event(block, len(block))
            else:
                chunk = self.conn.read_chunk()
                if chunk is None:
                    raise BenchError("event stream ended")
                idx, sep = (-1, 0) if self.pending else _boundary(chunk, 0)
                if idx >= 0 and idx + sep == len(chunk):
                    event = parse_event(chunk, idx)  # one chunk, one event: no copy
                else:
                    self.scan = max(0, len(self.pending) - 2)
                    self.pending += chunk
                    continue
            if event is not None:
                return event


def _boundary(buf, start: int) -> tuple[int, int]:
    """(index, length) of the first blank-line separator at or after ``start``, else (-1, 0).

    LF LF, or LF CR LF for a stream whose lines end in CR LF (uvicorn's sse-starlette)."""
    while True:
        i = buf.find(b"\n", start)
        if i < 0 or i + 1 >= len(buf):
            return -1, 0
        if buf[i + 1] == 10:
            return i, 2
        if buf[i + 1] == 13:
            if i + 2 >= len(buf):
                return -1, 0
            if buf[i + 2] == 10:
                return i, 3
        start = i + 1


def parse_event(buf, end: int) -> tuple[bytes, bytes] | None:
    """(event name, data) of the event in ``buf[:end]``; None for a comment-only block.

    A big single data line comes back as a memoryview into ``buf`` (no copy)."""
    name, data, pos = b"message", [], 0
    while pos < end:
        stop = buf.find(b"\n", pos, end)
        if stop < 0:
            stop = end
        line_end = stop - 1 if stop > pos and buf[stop - 1] == 13 else stop  # CR LF lines
        if buf.startswith(b"data:", pos, stop):
            first = pos + (6 if buf[pos + 5:pos + 6] == b" " else 5)
            data.append(memoryview(buf)[first:line_end] if line_end - first > 65536
                        else bytes(buf[first:line_end]))
        elif buf.startswith(b"event:", pos, stop):
            name = bytes(buf[pos + 6:line_end]).strip()
        pos = stop + 1
    if not data:
        return None  # a comment-only block (": ping")
    return name, data[0] if len(data) == 1 else b"\n".join(bytes(d) for d in data)
