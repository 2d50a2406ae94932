#!/usr/bin/env python3
"""Benchmark mcp-proxy against "the floor" (the same stdio server spoken to with no proxy).

    python bench/run.py [--quick] [--json bench/results.json] [--pin] [--profile DIR]

Paths measured (all traffic on 127.0.0.1):

  server/sse         HTTP+SSE client -> mcp-proxy (server mode) -> raw_server (stdio)
  server/streamable  Streamable HTTP client -> mcp-proxy (server mode) -> raw_server
  client/sse         stdio -> mcp-proxy URL/sse (client mode) -> mcp-proxy (server) -> raw_server
  client/streamable  stdio -> mcp-proxy --transport streamablehttp URL/mcp -> ... -> raw_server
  floor              stdio -> raw_server directly

The load client is this file: raw sockets with a hand-rolled HTTP/1.1 keep-alive client
(Content-Length and chunked bodies, SSE events), one blocking thread per session. No MCP SDK,
no requests. Every process started here is stopped here (SIGTERM, bounded wait, SIGKILL),
also on errors and on Ctrl-C. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW_SERVER = ROOT / "tests" / "servers" / "raw_server.py"
PY = sys.executable
HOST = "127.0.0.1"
PROTOCOL = "2025-06-18"
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEEPALIVE = 1  # --keepalive of the proxy under load (the idle-session proxy keeps the default)
IO_TIMEOUT = 30.0  # no single socket/pipe operation of the bench may block longer

# the targets
TARGET_ADDED_P50_MS = 0.5
TARGET_TPUT_20 = 2000.0
TARGET_RT_MS = {1 * MiB: 20.0, 10 * MiB: 150.0}
TARGET_IDLE_RSS_MIB = 150.0
TARGET_STARTUP_MS = 250.0

SERVER_PATHS = ("server/sse", "server/streamable")
CLIENT_PATHS = ("client/sse", "client/streamable")


class BenchError(Exception):
    pass


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

class Processes:
    """Every process the bench starts; ``stop_all`` ends them (TERM, bounded wait, KILL)."""

    def __init__(self, logdir: Path, pin: bool) -> None:
        self.logdir = logdir
        self.pin = pin
        self.procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._n = 0

    def start(self, argv: list[str], *, stdin=None, stdout=None, name: str = "proc",
              bufsize: int = -1, core: int | None = None) -> subprocess.Popen:
        with self._lock:
            self._n += 1
            logpath = self.logdir / f"{self._n:04d}-{name}.log"
        errfile = open(logpath, "wb")  # noqa: SIM115 - closed when the process is stopped
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=errfile,
                                    bufsize=bufsize, cwd=ROOT, close_fds=True)
        finally:
            errfile.close()
        proc.logpath = logpath  # type: ignore[attr-defined]
        if self.pin and core is not None:
            try:
                os.sched_setaffinity(proc.pid, {core})
            except OSError:
                pass
        with self._lock:
            self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
        if proc.stdin:  # a stdio server or client-mode proxy ends on EOF: give it a moment
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(min(2.0, timeout))
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {timeout:g} s; SIGKILL")
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if proc.stdout:
            try:
                proc.stdout.close()
            except OSError:
                pass
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        with self._lock:
            procs = list(self.procs)
        # SIGTERM everyone first, then wait: bounded overall
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.stdin and proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    log(f"pid {proc.pid} would not die")
        with self._lock:
            self.procs.clear()


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) from /proc/PID/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            total += st[1]
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- messages

def initialize_body(rid: int = 0) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "mcp-proxy-bench", "version": "1"}}},
        separators=(",", ":")).encode()


INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


class EchoCall:
    """tools/call echo bodies for one payload; checks the answers."""

    def __init__(self, size: int) -> None:
        self.text = "x" * size if size > 64 else "hello bench"
        self.size = len(self.text)
        self._head = b'{"jsonrpc":"2.0","id":'
        self._tail = (b',"method":"tools/call","params":{"name":"echo","arguments":{"text":'
                      + json.dumps(self.text).encode() + b"}}}")

    def body(self, rid: int) -> bytes:
        return self._head + str(rid).encode() + self._tail

    def check(self, rid: int, answer: bytes) -> None:
        """Cheap for small answers (full parse); for big ones: id and size, parse once."""
        if self.size <= 4096:
            obj = json.loads(answer)
            if obj.get("id") != rid or obj["result"]["content"][0]["text"] != self.text:
                raise BenchError(f"bad answer to call {rid}: {answer[:200]!r}")
        elif len(answer) < self.size or \
                (f'"id":{rid}').encode() not in bytes(answer[:100]) + bytes(answer[-100:]):
            raise BenchError(f"bad {len(answer)}-byte answer to call {rid}: {answer[:200]!r}")

    def check_full(self, rid: int, answer: bytes) -> None:
        obj = json.loads(bytes(answer) if isinstance(answer, memoryview) else answer)
        if obj.get("id") != rid or obj["result"]["content"][0]["text"] != self.text:
            raise BenchError(f"bad answer to call {rid}: {answer[:200]!r}")


# --------------------------------------------------------------------------- HTTP client

class HttpConn:
    """One keep-alive HTTP/1.1 connection over a blocking socket."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.port = port
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

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.read_head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (chunk := self.read_chunk()) is not None:
                parts.append(chunk)
            body = b"".join(parts)
        else:
            body = self.read_exact(int(headers.get("content-length", "0")))
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
            idx = _boundary(self.pending, self.scan)
            if idx >= 0:
                block = bytes(self.pending[:idx])
                del self.pending[:idx + 2]
                self.scan = 0
                event = parse_event(block, len(block))
            else:
                chunk = self.conn.read_chunk()
                if chunk is None:
                    raise BenchError("event stream ended")
                if not self.pending and _boundary(chunk, 0) == len(chunk) - 2:
                    event = parse_event(chunk, len(chunk) - 2)  # one chunk, one event: no copy
                else:
                    self.scan = max(0, len(self.pending) - 1)
                    self.pending += chunk
                    continue
            if event is not None:
                return event


def _boundary(buf, start: int) -> int:
    """Index of the first blank-line separator (LF LF) at or after ``start``, else -1."""
    while True:
        i = buf.find(b"\n", start)
        if i < 0 or i + 1 >= len(buf):
            return -1
        if buf[i + 1] == 10:
            return i
        start = i + 1


def parse_event(buf, end: int) -> tuple[bytes, bytes] | None:
    """(event name, data) of the event in ``buf[:end]``; None for a comment-only block.

    A big single data line comes back as a memoryview into ``buf`` (no copy)."""
    name, data, pos = b"message", [], 0
    while pos < end:
        stop = buf.find(b"\n", pos, end)
        if stop < 0:
            stop = end
        if buf.startswith(b"data:", pos, stop):
            first = pos + (6 if buf[pos + 5:pos + 6] == b" " else 5)
            data.append(memoryview(buf)[first:stop] if stop - first > 65536
                        else bytes(buf[first:stop]))
        elif buf.startswith(b"event:", pos, stop):
            name = bytes(buf[pos + 6:stop]).strip()
        pos = stop + 1
    if not data:
        return None  # a comment-only block (": ping")
    return name, data[0] if len(data) == 1 else b"\n".join(bytes(d) for d in data)


class StreamableSession:
    """A Streamable HTTP session: one keep-alive connection, POST /mcp per message."""

    HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}

    def __init__(self, port: int) -> None:
        self.conn = HttpConn(port)
        self.sid: str | None = None
        self.headers = dict(self.HEADERS)

    def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.conn.send_request("POST", "/mcp", self.headers, body)
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
            raise BenchError(f"POST /mcp: HTTP {status} {bytes(answer[:200])!r}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            # not expected from raw_server's echo, but handle it: the last message event
            events = [parse_event(b, len(b)) for b in bytes(answer).split(b"\n\n") if b.strip()]
            answer = [e for e in events if e and e[0] == b"message"][-1][1]
        return answer

    def close(self) -> None:
        if self.sid:
            try:
                self.conn.send_request("DELETE", "/mcp", {"Mcp-Session-Id": self.sid})
                self.conn.read_response()
            except (OSError, BenchError):
                pass
        self.conn.close()


class SseSession:
    """An HTTP+SSE session: the GET /sse stream plus one keep-alive connection for POSTs."""

    def __init__(self, port: int, post: bool = True) -> None:
        self.port = port
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

    def __init__(self, procs: Processes, argv: list[str], name: str, core: int | None = 0):
        self.procs = procs
        self.proc = procs.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                bufsize=0, name=name, core=core)
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

    def close(self, timeout: float = 10.0) -> int | None:
        try:
            self.out.close()
        except OSError:
            pass
        return self.procs.stop(self.proc, timeout)


# --------------------------------------------------------------------------- the proxy

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
        conn = HttpConn(self.port, timeout=10)
        try:
            conn.send_request("GET", "/status", {"Connection": "close"})
            status, headers, body = self._read_close(conn)
        finally:
            conn.close()
        return json.loads(body)

    @staticmethod
    def _read_close(conn: HttpConn):
        status, headers = conn.read_head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (chunk := conn.read_chunk()) is not None:
                parts.append(chunk)
            return status, headers, b"".join(parts)
        return status, headers, conn.read_exact(int(headers.get("content-length", "0")))

    def wait_sessions(self, count: int = 0, timeout: float = 20.0) -> int:
        """Wait (bounded) until at most ``count`` sessions are left and their children gone."""
        deadline = time.monotonic() + timeout
        while True:
            sessions = self.status()["sessions"]
            kids = len(descendants(self.pid))
            if (sessions <= count and kids <= count) or time.monotonic() > deadline:
                waited = timeout - (deadline - time.monotonic())
                if waited > 1:
                    log(f"waited {waited:.1f} s for the proxy to end old sessions "
                        f"({sessions} left)")
                return sessions
            time.sleep(0.1)

    def stop(self) -> int | None:
        return self.procs.stop(self.proc, timeout=20)


# --------------------------------------------------------------------------- measurements

def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency(session, calls: int, warmup: int) -> dict:
    echo = EchoCall(0)
    rid = 1000
    for _ in range(warmup):
        rid += 1
        echo.check(rid, session.call(echo.body(rid)))
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        rid += 1
        body = echo.body(rid)
        t0 = clock()
        answer = session.call(body)
        samples.append((clock() - t0) / 1e6)
        echo.check(rid, answer)
    samples.sort()
    return {"calls": calls, "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99),
            "mean_ms": statistics.fmean(samples), "min_ms": samples[0], "max_ms": samples[-1]}


def round_trips(session, sizes: list[int], runs: int) -> dict:
    out = {}
    rid = 5000
    for size in sizes:
        echo = EchoCall(size)
        times = []
        for run in range(runs + 1):  # the first run warms buffers and is not counted
            rid += 1
            body = echo.body(rid)
            t0 = time.perf_counter()
            answer = session.call(body)
            elapsed = (time.perf_counter() - t0) * 1000
            if run == 0:
                echo.check_full(rid, answer)
            else:
                echo.check(rid, answer)
                times.append(elapsed)
            del answer
        out[str(size)] = {"runs": runs, "median_ms": statistics.median(times),
                          "min_ms": min(times), "max_ms": max(times)}
    return out


def throughput(make_session, sessions: int, duration: float, warm: float,
               watch_pid: int | None, watch_children_of: int, around=None) -> dict:
    """``sessions`` threads, each with its own session, calling back to back.

    Calls completed inside [start + warm, start + warm + duration] count. CPU use of the
    proxy (``watch_pid``), of the stdio servers (descendants of ``watch_children_of``) and
    of the bench itself is sampled over the same window. ``around`` (a context manager,
    e.g. a profiler) is entered once every session is ready and left after the window.
    """
    ready = threading.Barrier(sessions + 1, timeout=120)
    go = threading.Event()  # set once ``window`` is known
    window: list[float] = []
    counts = [0] * sessions
    lat: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[str] = []
    opened: list = [None] * sessions

    def worker(i: int) -> None:
        session = None
        try:
            session = make_session()
            opened[i] = session
            session.initialize()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"session {i} setup: {exc!r}")
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        if not go.wait(IO_TIMEOUT) or session is None or errors or not window:
            return
        echo = EchoCall(0)
        lo, hi = window
        rid, n, mine = 0, 0, lat[i]
        clock = time.perf_counter
        try:
            while True:
                rid += 1
                body = echo.body(rid)
                t0 = clock()
                if t0 >= hi:
                    break
                answer = session.call(body)
                t1 = clock()
                if rid % 64 == 1:
                    echo.check(rid, answer)
                if lo <= t1 <= hi:
                    n += 1
                    mine.append(t1 - t0)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"session {i}: {exc!r}")
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(sessions)]
    t_setup = time.perf_counter()
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        errors.append("sessions did not all start within 120 s")
    setup_s = time.perf_counter() - t_setup
    result: dict = {"sessions": sessions, "setup_s": setup_s}
    try:
        if errors:
            raise BenchError(f"{len(errors)} session errors, first: {errors[0]}")
        with contextlib.ExitStack() as stack:
            if around is not None:
                stack.enter_context(around)
            start = time.perf_counter()
            window.extend([start + warm, start + warm + duration])
            go.set()
            time.sleep(warm)
            watched = [watch_pid] if watch_pid else []
            kids = [k for k in descendants(watch_children_of) if k != watch_pid]
            c0 = (cpu_seconds(watched), cpu_seconds(kids), self_cpu(), time.perf_counter(),
                  machine_ticks())
            rss0 = (rss_kib(watch_pid) if watch_pid else 0, sum(rss_kib(k) for k in kids))
            time.sleep(duration)
            c1 = (cpu_seconds(watched), cpu_seconds(kids), self_cpu(), time.perf_counter(),
                  machine_ticks())
        wall = c1[3] - c0[3]
        result.update({
            "cpu_proxy_pct": 100 * (c1[0] - c0[0]) / wall if watch_pid else None,
            "cpu_servers_pct": 100 * (c1[1] - c0[1]) / wall,
            "cpu_bench_pct": 100 * (c1[2] - c0[2]) / wall,
            "machine_busy_pct": 100 * (1 - (c1[4][1] - c0[4][1]) / max(1, c1[4][0] - c0[4][0])),
            "servers": len(kids),
            "proxy_rss_mib": rss0[0] / 1024 if watch_pid else None,
            "servers_rss_mib": rss0[1] / 1024,
        })
    finally:
        go.set()  # workers never wait past an error here
        for t in threads:
            t.join(duration + warm + IO_TIMEOUT + 5)
        for session in opened:
            if session is not None:
                try:
                    session.close()
                except Exception:  # noqa: BLE001
                    pass
    if errors:
        raise BenchError(f"{len(errors)} session errors, first: {errors[0]}")
    samples = sorted(x * 1000 for per in lat for x in per)
    total = sum(counts)
    result.update({"calls": total, "duration_s": duration, "calls_per_s": total / duration,
                   "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)})
    return result


def idle_sse_memory(procs: Processes, sessions: int, batch: int = 100) -> dict:
    """A fresh proxy (default settings); open ``sessions`` idle SSE streams; RSS before and with."""
    proxy = Proxy(procs, "proxy-memory")
    open_conns: list[SseSession] = []
    try:
        proxy.status()  # warm the app (first request imports/compiles a few things)
        time.sleep(0.5)
        base = rss_kib(proxy.pid)
        t0 = time.perf_counter()
        for first in range(0, sessions, batch):
            size = min(batch, sessions - first)
            group = [SseSession(proxy.port, post=False) for _ in range(size)]
            open_conns.extend(group)
            for conn in group:
                conn.read_endpoint()
        open_s = time.perf_counter() - t0
        time.sleep(1.0)
        status = proxy.status()
        kids = descendants(proxy.pid)
        rss = rss_kib(proxy.pid)
        with_children = rss + sum(rss_kib(k) for k in kids)
        result = {
            "sessions": sessions, "open_s": open_s,
            "sessions_seen_by_proxy": status["active_sse_connections"],
            "children": len(kids),
            "proxy_rss_idle_mib": base / 1024,
            "proxy_rss_mib": rss / 1024,
            "proxy_with_children_rss_mib": with_children / 1024,
            "per_session_kib": (rss - base) / sessions,
        }
        return result
    finally:
        for conn in open_conns:
            conn.close()
        proxy.stop()


def startup(procs: Processes, argv: list[str], runs: int, name: str) -> dict:
    """Process start to the initialize answer on stdout (initialize written at once)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session = StdioSession(procs, argv, name)
        try:
            session.write(initialize_body() + b"\n")
            answer = session.readline()
            times.append((time.perf_counter() - t0) * 1000)
            if b'"result"' not in answer:
                raise BenchError(f"initialize failed: {answer[:200]!r}")
        finally:
            code = session.close()
        if code not in (0, -signal.SIGTERM, None):
            log(f"{name} exited with {code}")
    return {"runs": runs, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times)}


def client_argv(path: str, proxy: Proxy) -> list[str]:
    if path == "client/sse":
        return [PY, "-m", "mcp_proxy", f"{proxy.url}/sse"]
    return [PY, "-m", "mcp_proxy", "--transport", "streamablehttp", f"{proxy.url}/mcp"]


# --------------------------------------------------------------------------- the run

def configure(quick: bool) -> dict:
    if quick:
        return {"calls": 200, "warmup": 20, "duration": 1.0, "warm": 0.3, "concurrency": [20, 100],
                "rt_runs": 2, "idle_sessions": 1000, "startup_runs": 3}
    return {"calls": 1000, "warmup": 100, "duration": 5.0, "warm": 0.5, "concurrency": [20, 100],
            "rt_runs": 5, "idle_sessions": 1000, "startup_runs": 7}


def raise_nofile(need: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run(opts, procs: Processes, results: dict) -> None:
    cfg = results["config"]
    floor_argv = [PY, str(RAW_SERVER)]
    paths = results["paths"]
    for path in ("floor", *SERVER_PATHS, *CLIENT_PATHS):
        paths[path] = {}
    sizes = [1 * MiB, 10 * MiB]

    # ---------------------------------------------------------------- the floor
    log("floor: latency and round trips (raw_server over stdio, no proxy)")
    floor = StdioSession(procs, floor_argv, "floor")
    try:
        floor.initialize()
        paths["floor"]["latency"] = latency(floor, cfg["calls"], cfg["warmup"])
        paths["floor"]["round_trip"] = round_trips(floor, sizes, cfg["rt_runs"])
    finally:
        floor.close()
    for n in cfg["concurrency"]:
        log(f"floor: throughput, {n} raw_server processes")
        paths["floor"][f"throughput_{n}"] = throughput(
            lambda: StdioSession(procs, floor_argv, "floor-tp"), n, cfg["duration"], cfg["warm"],
            None, os.getpid())
    log("floor: start-up")
    paths["floor"]["startup"] = startup(procs, floor_argv, cfg["startup_runs"], "floor-start")

    # ---------------------------------------------------------------- server mode
    # a closed SSE stream is only noticed when the proxy next writes to it (a ping), so a
    # short keepalive lets each phase start without the last phase's sessions and children
    proxy = Proxy(procs, "proxy", ("--keepalive", str(KEEPALIVE)))
    results["proxy_pid"] = proxy.pid
    try:
        factories = {"server/sse": lambda: SseSession(proxy.port),
                     "server/streamable": lambda: StreamableSession(proxy.port)}
        for path, make in factories.items():
            log(f"{path}: latency and round trips")
            session = make()
            try:
                session.initialize()
                with profiled(opts, f"{path}-latency", proxy.pid):
                    paths[path]["latency"] = latency(session, cfg["calls"], cfg["warmup"])
                paths[path]["round_trip"] = round_trips(session, sizes, cfg["rt_runs"])
            finally:
                session.close()
            proxy.wait_sessions(0)
        for path, make in factories.items():
            for n in cfg["concurrency"]:
                log(f"{path}: throughput, {n} sessions")
                paths[path][f"throughput_{n}"] = throughput(
                    make, n, cfg["duration"], cfg["warm"], proxy.pid, proxy.pid,
                    profiled(opts, f"{path}-throughput-{n}", proxy.pid) if opts.profile else None)
                proxy.wait_sessions(0)

        # ------------------------------------------------------------ client mode
        for path in CLIENT_PATHS:
            log(f"{path}: latency and round trips (remote: the server-mode proxy)")
            session = StdioSession(procs, client_argv(path, proxy), path.replace("/", "-"))
            try:
                session.initialize()
                paths[path]["latency"] = latency(session, cfg["calls"], cfg["warmup"])
                paths[path]["round_trip"] = round_trips(session, sizes, cfg["rt_runs"])
            finally:
                code = session.close()
                if code not in (0, -signal.SIGTERM):
                    log(f"{path}: client exited with {code}")
            paths[path]["throughput_note"] = ("skipped: client mode serves one stdio session "
                                              "per process by design")
            log(f"{path}: start-up")
            paths[path]["startup"] = startup(procs, client_argv(path, proxy),
                                             cfg["startup_runs"], path.replace("/", "-"))
            proxy.wait_sessions(0)
    finally:
        code = proxy.stop()
        results["proxy_exit_code"] = code

    # ---------------------------------------------------------------- memory
    log(f"server/sse: {cfg['idle_sessions']} idle SSE sessions on a fresh proxy")
    paths["server/sse"]["idle_sessions"] = idle_sse_memory(procs, cfg["idle_sessions"])


def profiled(opts, name: str, pid: int):
    if not opts.profile:
        return contextlib.nullcontext()
    return PySpy(opts.profile, name.replace("/", "-"), pid)


class PySpy:
    """``py-spy record`` of the proxy for the duration of a ``with`` block (if installed).

    Writes collapsed stacks (``DIR/NAME.txt``, one ``frame;frame;... count`` per line, for
    flamegraph.pl or speedscope). Sampling costs CPU: figures of a profiled run are not
    comparable with an unprofiled one.
    """

    def __init__(self, outdir: str, name: str, pid: int) -> None:
        self.exe = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
        self.out = Path(outdir) / f"{name}.txt"
        self.pid = pid
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        if not os.path.exists(self.exe):
            log("py-spy not found; no profile")
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, "record", "-p", str(self.pid), "-r", "200", "--nonblocking",
             "-f", "raw", "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        log(f"profile written to {self.out} (collapsed stacks)")


# --------------------------------------------------------------------------- the table

def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:.0f}" if digits < 2 else f"{value:.1f}"
    return f"{value:.{digits}f}"


def build_rows(results: dict) -> list[dict]:
    p = results["paths"]
    fl = p["floor"]
    rows: list[dict] = []

    def add(figure, path, value, floor, target="", verdict="", digits=2):
        ratio = value / floor if value is not None and floor else None
        rows.append({"figure": figure, "path": path, "value": value, "floor": floor,
                     "ratio": ratio, "target": target, "result": verdict, "digits": digits})

    for key, name in (("p50_ms", "echo latency p50 (ms)"), ("p99_ms", "echo latency p99 (ms)")):
        for path in (*SERVER_PATHS, *CLIENT_PATHS):
            lat = p[path].get("latency")
            if not lat:
                continue
            floor = fl["latency"][key]
            target = verdict = ""
            if key == "p50_ms" and path in SERVER_PATHS:
                added = lat[key] - floor
                target = f"added <= {TARGET_ADDED_P50_MS} ms"
                verdict = f"{'PASS' if added <= TARGET_ADDED_P50_MS else 'FAIL'} (+{added:.2f})"
            elif key == "p50_ms":
                verdict = f"info (+{lat[key] - floor:.2f})"
            add(name, path, lat[key], floor, target, verdict, 3)
    for n in results["config"]["concurrency"]:
        key = f"throughput_{n}"
        for path in SERVER_PATHS:
            tp = p[path].get(key)
            if not tp:
                continue
            target = verdict = ""
            if n == 20:
                target = f">= {TARGET_TPUT_20:,.0f}/s"
                verdict = "PASS" if tp["calls_per_s"] >= TARGET_TPUT_20 else "FAIL"
            add(f"calls/s, {n} sessions", path, tp["calls_per_s"],
                fl[key]["calls_per_s"], target, verdict, 0)
    rows.append({"figure": "calls/s, 20 and 100 sessions", "path": "client/*",
                 "note": "one stdio session per process, by design"})
    for size in (1 * MiB, 10 * MiB):
        label = f"{size // MiB} MiB round trip (ms)"
        for path in (*SERVER_PATHS, *CLIENT_PATHS):
            rt = p[path].get("round_trip", {}).get(str(size))
            if not rt:
                continue
            target = verdict = ""
            if path in SERVER_PATHS:
                target = f"<= {TARGET_RT_MS[size]:g} ms"
                verdict = "PASS" if rt["median_ms"] <= TARGET_RT_MS[size] else "FAIL"
            else:
                verdict = "info (2 proxies)"
            add(label, path, rt["median_ms"], fl["round_trip"][str(size)]["median_ms"],
                target, verdict, 1)
    idle = p["server/sse"].get("idle_sessions")
    if idle:
        n = idle["sessions"]
        add(f"proxy RSS, {n:,} idle SSE (MiB)", "server/sse", idle["proxy_rss_mib"],
            idle["proxy_rss_idle_mib"], f"<= {TARGET_IDLE_RSS_MIB:g} MiB",
            "PASS" if idle["proxy_rss_mib"] <= TARGET_IDLE_RSS_MIB and n >= 1000 else "FAIL", 1)
        add(f"  + children RSS (MiB), {idle['children']} children", "server/sse",
            idle["proxy_with_children_rss_mib"], idle["proxy_rss_idle_mib"], "", "info", 1)
        add(f"time to open {n:,} SSE sessions (ms)", "server/sse", idle["open_s"] * 1000, None,
            "", "info", 0)
    for path in CLIENT_PATHS:
        st = p[path].get("startup")
        if st:
            add("client start -> initialize (ms)", path, st["median_ms"],
                fl["startup"]["median_ms"], f"<= {TARGET_STARTUP_MS:g} ms",
                "PASS" if st["median_ms"] <= TARGET_STARTUP_MS else "FAIL", 0)
    return rows


def render_table(rows: list[dict]) -> str:
    header = ["figure", "path", "proxy", "floor", "ratio", "target", "result"]
    body = []
    for r in rows:
        if "note" in r:
            body.append([r["figure"], r["path"], "skipped", "", "", "", r["note"]])
            continue
        d = r["digits"]
        body.append([r["figure"], r["path"], fmt(r["value"], d), fmt(r["floor"], d),
                     "—" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["target"],
                     r["result"]])
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) for i in range(len(header))]
    right = {2, 3, 4}  # numbers

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 1) + (":" if i in right else "-")
                                        for i, w in enumerate(widths)) + "|"]
    out.extend(line(b) for b in body)
    return "\n".join(out)


def notes(results: dict) -> list[str]:
    p = results["paths"]
    out = []
    for path in ("floor", *SERVER_PATHS):
        for n in results["config"]["concurrency"]:
            tp = p[path].get(f"throughput_{n}")
            if not tp:
                continue
            proxy = ""
            if tp["cpu_proxy_pct"] is not None:
                per_call = tp["cpu_proxy_pct"] / 100 * tp["duration_s"] / max(1, tp["calls"])
                proxy = f"proxy {tp['cpu_proxy_pct']:.0f}% ({per_call * 1000:.2f} ms/call), "
            rss = "" if tp["proxy_rss_mib"] is None else (
                f"; RSS proxy {tp['proxy_rss_mib']:.0f} MiB, servers "
                f"{tp['servers_rss_mib']:.0f} MiB")
            out.append(f"  {path:<18} {n:>3} sessions: {tp['calls_per_s']:>7,.0f} calls/s, "
                       f"p50 {tp['p50_ms']:.2f} ms p99 {tp['p99_ms']:.2f} ms; CPU {proxy}"
                       f"{tp['servers']} servers {tp['cpu_servers_pct']:.0f}%, "
                       f"bench {tp['cpu_bench_pct']:.0f}%, machine {tp['machine_busy_pct']:.0f}% "
                       f"busy{rss}")
    return out


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"mcp-proxy benchmark, {results['date']} ({'quick' if results['quick'] else 'full'} run)"
        f", revision {results.get('revision', '?')}",
        f"machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}",
        ("load client, proxy and stdio servers SHARE these cores (not pinned)" if not m["pinned"]
         else "pinned: proxy and its stdio servers (and floor servers) on core 0, "
              "load client on core 1"),
        f"latency: {results['config']['calls']} sequential calls after "
        f"{results['config']['warmup']} warm-up; throughput: {results['config']['duration']:g} s "
        f"per run; round trips: median of {results['config']['rt_runs']}; start-up: median of "
        f"{results['config']['startup_runs']}",
        "",
        render_table(build_rows(results)),
        "",
        "floor = raw_server over stdio, no proxy (throughput: 20/100 raw_server processes; "
        "RSS: the same proxy with no session; start-up: raw_server start -> initialize answer)",
        "client mode: stdio -> mcp-proxy (client) -> mcp-proxy (server) -> raw_server; "
        "targets apply to server mode, except start-up",
        f"proxy under load runs with --keepalive {KEEPALIVE} --max-body-size 32MiB; the "
        "idle-session proxy with defaults (--keepalive 15)",
        "CPU during throughput (100% = one core; machine busy: share of all cores):",
        *notes(results),
    ]
    return "\n".join(lines)


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=10,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mcp_proxy"], cwd=ROOT,
                               timeout=10, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head}{' + uncommitted changes in mcp_proxy/' if dirty else ''}" or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark mcp-proxy against the floor.")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 1 min)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"),
                        help="where to write the figures (default bench/results.json)")
    parser.add_argument("--pin", action="store_true",
                        help="pin proxy and stdio servers to core 0, the load client to core 1")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy record the server-mode proxy during the latency loops")
    opts = parser.parse_args()

    try:
        import mcp_proxy  # noqa: F401
    except ImportError:
        print(f"mcp_proxy is not importable by {PY}; run `make install` first", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    pinned = bool(opts.pin and cores >= 2)
    if pinned:
        os.sched_setaffinity(0, {1})  # this thread; the worker threads inherit it
    cfg = configure(opts.quick)
    nofile = raise_nofile(2 * cfg["idle_sessions"] + 2 * 2 * max(cfg["concurrency"]) + 512)

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), "?")
    except OSError:
        pass
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": opts.quick,
        "revision": git_revision(),
        "machine": {"cores": cores, "cpu": cpu, "kernel": platform.release(),
                    "python": platform.python_version(), "pinned": pinned,
                    "rlimit_nofile": list(nofile)},
        "config": cfg, "paths": {},
    }
    logdir = Path(tempfile.mkdtemp(prefix="mcp-proxy-bench-"))
    procs = Processes(logdir, pinned)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.perf_counter()
    failed = False
    try:
        run(opts, procs, results)
    except (BenchError, OSError, KeyboardInterrupt) as exc:
        failed = True
        log(f"benchmark aborted: {exc!r}; process logs in {logdir}")
    finally:
        procs.stop_all()
    results["elapsed_s"] = time.perf_counter() - started
    if not failed:
        shutil.rmtree(logdir, ignore_errors=True)

    try:
        text = report(results)
    except (KeyError, TypeError) as exc:  # a partial run: still write what we have
        text = f"(partial results, no table: {exc!r})"
    rows = []
    try:
        rows = [{k: v for k, v in r.items() if k != "digits"} for r in build_rows(results)]
    except (KeyError, TypeError):
        pass
    results["table"] = rows
    results["table_text"] = text
    out = Path(opts.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"\nfigures written to {out} ({results['elapsed_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
