"""The peers (``--peers``): mcp-proxy 0.13 and supergateway 4 measured like our proxy.

Owns installing them on first use into ``.cache/bench-peers/`` (a venv of its own for
mcp-proxy 0.13, whose command has our name; ``npm install --prefix`` for supergateway, run
by the machine's Node >= 20), starting each in server mode over the same raw_server and in
client mode against our server-mode proxy, and measuring them with the same load client
(clients.py) and the same measurements (measure.py). Figures a peer cannot give are
recorded as ``{"na": reason}``, failures as ``{"error": message}``; peertable.py lays them
out next to ours.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time

from clients import KEEPALIVE, Proxy, SseSession, StdioSession, StreamableSession
from measure import latency, round_trips, startup, throughput
from procs import PY, RAW_SERVER, ROOT, BenchError, MiB, Processes, descendants, log
from wire import HOST

CACHE = ROOT / ".cache" / "bench-peers"
MCP_PROXY_VENV = CACHE / "mcp-proxy-0.13"
SUPERGATEWAY_DIR = CACHE / "supergateway"
SUPERGATEWAY_JS = SUPERGATEWAY_DIR / "node_modules" / "supergateway" / "dist" / "index.js"
INSTALL_TIMEOUT = 300
PEERS = ("mcp-proxy 0.13", "supergateway")
SERVER_PEER_PATHS = ("server/sse", "server/streamable")
CLIENT_PEER_PATHS = ("client/sse", "client/streamable")
SG_SSE_BROADCAST = ("supergateway's stdio->SSE has one child for all sessions and sends each "
                    "of its answers to every session, so concurrent sessions get each other's "
                    "answers")


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"installing {what} failed: {exc!r}") from exc
    if done.returncode != 0:
        raise BenchError(f"installing {what} failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-1500:]}")


def install() -> dict[str, dict]:
    """Each peer's command prefix and version, installed first if missing (bounded)."""
    exe = MCP_PROXY_VENV / "bin" / "mcp-proxy"
    if not exe.exists():
        log(f"installing mcp-proxy 0.13 from PyPI into {MCP_PROXY_VENV}")
        _run([PY, "-m", "venv", "--clear", str(MCP_PROXY_VENV)], "a venv for mcp-proxy 0.13")
        _run([str(MCP_PROXY_VENV / "bin" / "pip"), "install", "--quiet",
              "--disable-pip-version-check", "mcp-proxy==0.13.*"], "mcp-proxy 0.13 (pip)")
    node = shutil.which("node")
    if node is None:
        raise BenchError("supergateway needs Node.js >= 20 (`node` is not on PATH)")
    major = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    if int(major.stdout.strip().lstrip("v").split(".")[0] or 0) < 20:
        raise BenchError(f"supergateway needs Node.js >= 20, found {major.stdout.strip()}")
    if not SUPERGATEWAY_JS.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm is not on PATH: it is needed once to install supergateway")
        log(f"installing supergateway 4 from npm into {SUPERGATEWAY_DIR}")
        _run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(SUPERGATEWAY_DIR),
              "supergateway@4"], "supergateway 4 (npm)")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                             timeout=60).stdout.strip().split()[-1:] or ["?"]
    package = json.loads((SUPERGATEWAY_JS.parents[1] / "package.json").read_text())
    return {"mcp-proxy 0.13": {"argv": [str(exe)], "version": version[0]},
            "supergateway": {"argv": [node, str(SUPERGATEWAY_JS)],
                             "version": f"{package['version']} (Node {major.stdout.strip()})"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_argv(peer: str, prefix: list[str], path: str, port: int) -> list[str]:
    if peer == "mcp-proxy 0.13":  # serves /sse, /messages/ and /mcp at once
        return [*prefix, "--port", str(port), "--host", HOST, "--", PY, str(RAW_SERVER)]
    out = ["--outputTransport", "streamableHttp", "--stateful"] if path.endswith("able") else []
    return [*prefix, "--stdio", f"{PY} {RAW_SERVER}", "--port", str(port), "--logLevel",
            "none", *out]


def client_argv(peer: str, prefix: list[str], path: str, url: str) -> list[str]:
    if peer == "mcp-proxy 0.13":
        return [*prefix, f"{url}/sse"] if path == "client/sse" else \
            [*prefix, "--transport", "streamablehttp", f"{url}/mcp"]
    flag, tail = ("--sse", "/sse") if path == "client/sse" else ("--streamableHttp", "/mcp")
    return [*prefix, flag, url + tail, "--logLevel", "none"]


class PeerServer:
    """A peer in server mode over raw_server on a free port, up once it accepts connections."""

    def __init__(self, procs: Processes, argv: list[str], name: str) -> None:
        self.procs = procs
        self.port = int(argv[argv.index("--port") + 1])
        self.proc = procs.start(argv, name=name, core=0)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name} did not start; its log {self.proc.logpath}:\n"  # type: ignore[attr-defined]
                                 + self.proc.logpath.read_text(errors="replace")[-1500:])  # type: ignore[attr-defined]
            time.sleep(0.05)

    def settle(self, children: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until at most ``children`` processes are left below the peer."""
        deadline = time.monotonic() + timeout
        while len(descendants(self.pid)) > children and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        self.procs.stop(self.proc, timeout=10)


def guarded(out: dict, key: str, fn, proc=None, limit: float = 60.0) -> None:
    """``out[key] = fn()``, or ``{"error": why}``; a stdio ``proc`` is killed past ``limit`` s.

    A read from a pipe has no timeout of its own: the kill is what bounds it. ``proc`` may
    be a callable that names the process at that moment (start-up runs start several).
    """
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        target = proc() if callable(proc) else proc
        if target is not None:
            target.kill()

    timer = threading.Timer(limit, kill) if proc is not None else None
    if timer:
        timer.start()
    try:
        out[key] = fn()
    except (BenchError, OSError) as exc:
        why = f"no answer within {limit:g} s" if fired.is_set() else str(exc)
        if isinstance(exc, ConnectionResetError):
            why = "connection reset while the request body was sent"
        code = re.search(r" HTTP (\d+) .*(too large|TooLarge)", why)
        if code:  # the same reason every run: no session id, no HTML page
            why = (re.sub(r"\?session_?[iI]d=[\w-]+", "", why.split(":")[0])
                   + f": HTTP {code.group(1)}, body too large")
        log(f"  {key}: {why}")
        out[key] = {"error": why[:160]}
    finally:
        if timer:
            timer.cancel()


def measure_session(fig: dict, session, cfg: dict, proc=None) -> None:
    """Latency and 1 and 10 MiB round trips on one session, each step bounded."""
    guarded(fig, "initialize", lambda: session.initialize() or {}, proc)
    if "error" in fig["initialize"]:
        return
    guarded(fig, "latency", lambda: latency(session, cfg["calls"], cfg["warmup"]), proc)
    fig["round_trip"] = {}
    for size in (1 * MiB, 10 * MiB):
        guarded(fig["round_trip"], str(size),
                lambda n=size: round_trips(session, [n], cfg["rt_runs"])[str(n)], proc, 15)


def server_role(procs: Processes, peer: str, prefix: list[str], path: str, cfg: dict) -> dict:
    """A peer in server mode: latency, round trips, then 20 sessions at once."""
    fig: dict = {}
    log(f"peer {peer}, {path}: latency, round trips, throughput (20 sessions)")
    server = PeerServer(procs, server_argv(peer, prefix, path, free_port()),
                        f"peer-{peer.split()[0]}-{path.split('/')[1]}")
    try:
        base = len(descendants(server.pid))  # a child started with the server (shared)
        session_class = SseSession if path == "server/sse" else StreamableSession
        session = session_class(server.port)
        try:
            measure_session(fig, session, cfg)
        finally:
            session.close()
        server.settle(base)
        if peer == "supergateway" and path == "server/sse":
            fig["throughput_20"] = {"na": SG_SSE_BROADCAST}
        else:
            guarded(fig, "throughput_20", lambda: throughput(
                lambda: session_class(server.port), 20, cfg["duration"], cfg["warm"],
                server.pid, server.pid))
        fig["children_at_start"] = base
    finally:
        server.stop()
    return fig


def client_role(procs: Processes, peer: str, argv: list[str], path: str, remote: Proxy,
                cfg: dict) -> dict:
    """A peer in client mode (stdio) against our server-mode proxy; then its start-up."""
    fig: dict = {}
    log(f"peer {peer}, {path}: latency, round trips, start-up (remote: ours)")
    session = StdioSession(procs, argv, f"peer-{peer.split()[0]}-{path[7:]}")
    try:
        measure_session(fig, session, cfg, session.proc)
    finally:
        session.close()
    remote.wait_sessions(0)
    guarded(fig, "startup", lambda: startup(procs, argv, cfg["startup_runs"],
                                            f"peer-start-{path[7:]}"),
            lambda: next((p for p in reversed(procs.procs) if p.args == argv), None))
    remote.wait_sessions(0)
    return fig


def run_peers(procs: Processes, cfg: dict) -> dict:
    """Every peer in every role it can play; ``{peer: {"version", "paths": {path: figures}}}``."""
    results: dict = {}
    for peer, info in install().items():
        paths: dict = {}
        results[peer] = {"version": info["version"], "paths": paths}
        for path in SERVER_PEER_PATHS:
            paths[path] = server_role(procs, peer, info["argv"], path, cfg)
        remote = Proxy(procs, "peers-remote", ("--keepalive", str(KEEPALIVE)))
        try:
            for path in CLIENT_PEER_PATHS:
                argv = client_argv(peer, info["argv"], path, remote.url)
                paths[path] = client_role(procs, peer, argv, path, remote, cfg)
        finally:
            remote.stop()
    return results
