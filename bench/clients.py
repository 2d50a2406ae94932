"""The MCP endpoints the bench talks to, and the proxy under test.

The load-client sessions speak MCP with no SDK, one blocking session per thread:
``StreamableSession`` (Streamable HTTP: one keep-alive connection, POST /mcp per message),
``SseSession`` (HTTP+SSE: the GET /sse stream plus a connection for the POSTs) and
``StdioSession`` (JSON lines over the pipes of a process: raw_server itself, the floor, or
mcp-proxy in client mode); ``ModernSession`` and ``ModernStdioSession`` are the
2026-07-28 era's (no session, the ``_meta`` envelope on each request); each has
``initialize``, ``call`` and ``close``. ``Proxy`` starts mcp-proxy in server mode over
raw_server on a random port and reads its /status.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from procs import PY, RAW_SERVER, BenchError, Processes, descendants, log
from wire import HOST, HttpConn, SseEvents, parse_event

PROTOCOL = "2025-06-18"
KEEPALIVE = 1  # --keepalive of the proxy under load (the idle-session proxy keeps the default)


def initialize_body(rid: int = 0) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "mcp-proxy-bench", "version": "1"}}},
        separators=(",", ":")).encode()


INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


class StreamableSession:
    """A Streamable HTTP session: one keep-alive connection, a POST to ``path`` (default
    /mcp; a named server's is /servers/NAME/mcp) per message."""

    HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}

    def __init__(self, port: int, path: str = "/mcp") -> None:
        self.conn = HttpConn(port)
        self.path = path
        self.sid: str | None = None
        self.headers = dict(self.HEADERS)

    def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.conn.send_request("POST", self.path, self.headers, body)
        return self.conn.read_response()

    def initialize(self) -> None:
        status, headers, body = self._post(initialize_body())
        if status != 200 or "mcp-session-id" not in headers:
            raise BenchError(f"initialize: HTTP {status} {body[:200]!r}")
        self.sid = headers["mcp-session-id"]
        self.headers = {**self.HEADERS, "Mcp-Session-Id": self.sid,
                        "MCP-Protocol-Version": PROTOCOL}
        status, _, body = self._post(INITIALIZED)
        if status != 202:
            raise BenchError(f"notifications/initialized: HTTP {status} {body[:200]!r}")

    def call(self, body: bytes) -> bytes:
        status, headers, answer = self._post(body)
        if status != 200:
            raise BenchError(f"POST {self.path}: HTTP {status} {bytes(answer[:200])!r}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            # not expected from raw_server's echo, but handle it: the last message event
            events = [parse_event(b, len(b)) for b in bytes(answer).split(b"\n\n") if b.strip()]
            answer = [e for e in events if e and e[0] == b"message"][-1][1]
        return answer

    def close(self) -> None:
        if self.sid:
            try:
                self.conn.send_request("DELETE", self.path, {"Mcp-Session-Id": self.sid})
                self.conn.read_response()
            except (OSError, BenchError):
                pass
        self.conn.close()


MODERN = "2026-07-28"
_ENVELOPE = json.dumps({"io.modelcontextprotocol/protocolVersion": MODERN,
                        "io.modelcontextprotocol/clientCapabilities": {},
                        "io.modelcontextprotocol/clientInfo": {"name": "mcp-proxy-bench",
                                                               "version": "1"}},
                       separators=(",", ":")).encode()


DISCOVER = (b'{"jsonrpc":"2.0","id":0,"method":"server/discover","params":{"_meta":'
            + _ENVELOPE + b'}}')


def with_envelope(body: bytes) -> bytes:
    """An echo call's body with the 2026-07-28 envelope: the body ends with its params and
    itself, so the envelope goes just before."""
    return body[:-2] + b',"_meta":' + _ENVELOPE + b"}}"


class ModernSession(StreamableSession):
    """2026-07-28 requests on one keep-alive connection: no session, an envelope on each."""

    def initialize(self) -> None:
        self.headers = {**self.HEADERS, "MCP-Protocol-Version": MODERN,
                        "Mcp-Method": "server/discover"}
        status, _, body = self._post(DISCOVER)
        if status != 200:
            raise BenchError(f"server/discover: HTTP {status} {bytes(body[:200])!r}")
        self.headers = {**self.HEADERS, "MCP-Protocol-Version": MODERN,
                        "Mcp-Method": "tools/call", "Mcp-Name": "echo"}

    def call(self, body: bytes) -> bytes:
        return super().call(with_envelope(body))


class SseSession:
    """An HTTP+SSE session: the GET /sse stream plus one keep-alive connection for POSTs."""

    def __init__(self, port: int, post: bool = True) -> None:
        self.stream = HttpConn(port)
        self.stream.send_request("GET", "/sse", {"Accept": "text/event-stream"})
        self.post_conn = HttpConn(port) if post else None
        self.endpoint: str | None = None

    def read_endpoint(self) -> None:
        status, headers = self.stream.read_head()
        if status != 200 or headers.get("transfer-encoding", "").lower() != "chunked":
            raise BenchError(f"GET /sse: HTTP {status} {headers}")
        self.events = SseEvents(self.stream)
        name, data = self.events.next()
        if name != b"endpoint":
            raise BenchError(f"first event is {name!r}, not endpoint")
        self.endpoint = bytes(data).decode()

    def _send(self, body: bytes) -> None:
        assert self.post_conn is not None and self.endpoint
        self.post_conn.send_request("POST", self.endpoint,
                                    {"Content-Type": "application/json"}, body)
        status, _, text = self.post_conn.read_response()
        if status != 202:
            raise BenchError(f"POST {self.endpoint}: HTTP {status} {bytes(text[:200])!r}")

    def _answer(self) -> bytes:
        while True:
            name, data = self.events.next()
            if name == b"message":
                return data

    def initialize(self) -> None:
        self.read_endpoint()
        self._send(initialize_body())
        answer = json.loads(self._answer())
        if "result" not in answer:
            raise BenchError(f"initialize failed: {answer}")
        self._send(INITIALIZED)

    def call(self, body: bytes) -> bytes:
        self._send(body)
        return self._answer()

    def close(self) -> None:
        if self.post_conn:
            self.post_conn.close()
        self.stream.close()


class StdioSession:
    """A stdio JSON-RPC process (raw_server: the floor; or mcp-proxy in client mode)."""

    def __init__(self, procs: Processes, argv: list[str], name: str) -> None:
        self.procs = procs
        self.proc = procs.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                bufsize=0, name=name, core=0)
        self.out = os.fdopen(os.dup(self.proc.stdout.fileno()), "rb", buffering=1 << 18)
        self.infd = self.proc.stdin.fileno()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.infd, view[: 1 << 20])
            view = view[n:]

    def readline(self) -> bytes:
        line = self.out.readline()
        if not line:
            raise BenchError(f"{self.proc.args[:3]} closed its stdout "
                             f"(see {self.proc.logpath})")  # type: ignore[attr-defined]
        return line

    def initialize(self) -> None:
        self.write(initialize_body() + b"\n")
        answer = json.loads(self.readline())
        if "result" not in answer:
            raise BenchError(f"initialize failed: {answer}")
        self.write(INITIALIZED + b"\n")

    def call(self, body: bytes) -> bytes:
        self.write(body + b"\n")
        return self.readline().rstrip(b"\r\n")

    def close(self) -> int | None:
        try:
            self.out.close()
        except OSError:
            pass
        return self.procs.stop(self.proc)


class ModernStdioSession(StdioSession):
    """A 2026-07-28 desktop client on a stdio process (mcp-proxy in client mode): no
    ``initialize``, ``server/discover`` first, an envelope on each request."""

    def initialize(self) -> None:
        self.write(DISCOVER + b"\n")
        answer = json.loads(self.readline())
        if "result" not in answer:
            raise BenchError(f"server/discover failed: {answer}")

    def call(self, body: bytes) -> bytes:
        return super().call(with_envelope(body))


def get_status(port: int) -> dict:
    """GET /status on a fresh connection (under gunicorn: whichever worker accepts it)."""
    conn = HttpConn(port, timeout=10)
    try:
        conn.send_request("GET", "/status", {"Connection": "close"})
        _, headers = conn.read_head()
        return json.loads(conn.read_body(headers))
    finally:
        conn.close()


class Proxy:
    """mcp-proxy in server mode over raw_server, on a random port."""

    def __init__(self, procs: Processes, name: str, extra: tuple[str, ...] = ()) -> None:
        self.procs = procs
        argv = [PY, "-m", "mcp_proxy", "--port", "0", "--host", HOST,
                "--max-body-size", "32MiB", *extra, "--", PY, str(RAW_SERVER)]
        self.proc = procs.start(argv, name=name, core=0)
        self.pid = self.proc.pid
        logpath: Path = self.proc.logpath  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        pattern = re.compile(r"Status at http://127\.0\.0\.1:(\d+)/status")
        while True:
            found = pattern.search(logpath.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"mcp-proxy did not start; its log {logpath}:\n"
                                 + logpath.read_text(errors="replace")[-2000:])
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def status(self) -> dict:
        return get_status(self.port)

    def wait_sessions(self, count: int = 0, timeout: float = 20.0) -> int:
        """Wait (bounded) until at most ``count`` sessions are left and their children gone."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            sessions = status["sessions"]
            # shared processes (the modern lane, --shared-child) outlive the sessions
            shared = sum(1 for server in status["server_instances"].values()
                         if server.get("mode") == "shared"
                         or server.get("modern_lane", {}).get("state") == "running")
            kids = len(descendants(self.pid)) - shared
            if (sessions <= count and kids <= count) or time.monotonic() > deadline:
                waited = timeout - (deadline - time.monotonic())
                if waited > 1:
                    log(f"waited {waited:.1f} s for the proxy to end old sessions "
                        f"({sessions} left)")
                return sessions
            time.sleep(0.1)

    def stop(self) -> int | None:
        return self.procs.stop(self.proc, timeout=20)
