"""Slow and vanished clients: the proxy's memory under a client that reads nothing, and how
fast a closed stream stops its session's server.

``slow_reader_memory``: a fresh proxy; one SSE client that never reads its stream (a 16 KiB
receive buffer, so the kernel does not hide the stall) asks for ``total`` bytes of
``answer``-byte messages (raw_server's ``notify`` tool), then POSTs ``answer``-byte echo calls
until the proxy answers 503 three times; the proxy's RSS is sampled after every POST, and another
session's ping latency is measured before and during the stall. Then the stalled client
leaves, and RSS is followed for 10 s. ``disconnect_to_stop``: a client opens a stream, makes
its server start, closes the connection; timed until that server's process is gone.
"""

from __future__ import annotations

import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

from clients import Proxy, SseSession, StreamableSession
from procs import BenchError, MiB, Processes, descendants, log, rss_kib
from wire import HOST, HttpConn


def _ping_ms(session: SseSession, calls: int) -> float:
    times = []
    for n in range(calls):
        t0 = time.perf_counter()
        session.call(json.dumps({"jsonrpc": "2.0", "id": n, "method": "ping"}).encode())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _stalled_sse(port: int) -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    sock.settimeout(10)
    sock.connect((HOST, port))
    sock.sendall(f"GET /sse HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    data = b""
    while b"session_id=" not in data or not data.split(b"session_id=")[1].count(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchError("the stalled client's stream ended early")
        data += chunk
    session_id = data.split(b"session_id=")[1].split(b"\n")[0].decode().strip()
    return sock, f"/messages/?session_id={session_id}"


def slow_reader_memory(procs: Processes, total: int = 100 * MiB, answer: int = 128 << 10
                       ) -> dict:
    proxy = Proxy(procs, "proxy-slow", ("--write-timeout", "1", "--stall-timeout", "30"))
    other = SseSession(proxy.port)
    stalled = None
    try:
        other.initialize()
        base_ping = _ping_ms(other, 200)
        time.sleep(0.5)
        before = rss_kib(proxy.pid)
        stalled, endpoint = _stalled_sse(proxy.port)
        poster = HttpConn(proxy.port, timeout=30)
        text = "x" * answer
        notify = json.dumps({"jsonrpc": "2.0", "id": "all", "method": "tools/call", "params": {
            "name": "notify", "arguments": {"count": total // answer, "size": answer}}})
        poster.send_request("POST", endpoint, {"Content-Type": "application/json"},
                            notify.encode())
        if poster.read_response()[0] != 202:
            raise BenchError("the stalled client's request was refused")
        asked, accepted, busy = total, 0, 0
        peak = before
        n = 0
        while busy < 3:
            body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": text}}}).encode()
            n += 1
            poster.send_request("POST", endpoint, {"Content-Type": "application/json"}, body)
            status, _, _ = poster.read_response()
            asked += answer
            accepted += status == 202
            busy += status == 503
            peak = max(peak, rss_kib(proxy.pid))
        stalled_ping = _ping_ms(other, 200)
        peak = max(peak, rss_kib(proxy.pid))
        poster.close()
        stalled.close()  # the client leaves
        left = time.perf_counter()
        back_within_8 = None
        samples = []
        while time.perf_counter() - left < 10:
            rss = rss_kib(proxy.pid)
            samples.append(rss)
            if back_within_8 is None and rss - before <= 8 * 1024:
                back_within_8 = time.perf_counter() - left
            time.sleep(0.25)
        return {
            "answer_bytes": answer, "asked_bytes": asked, "posts_accepted": accepted,
            "posts_busy_503": busy, "rss_before_mib": before / 1024,
            "rss_peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024,
            "rss_10s_after_mib": samples[-1] / 1024,
            "after_minus_before_mib": (samples[-1] - before) / 1024,
            "back_within_8mib_s": back_within_8,
            "other_ping_p50_ms_before": base_ping, "other_ping_p50_ms_during": stalled_ping,
        }
    finally:
        other.close()
        if stalled is not None:
            stalled.close()
        proxy.stop()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _wait_child(proxy: Proxy) -> int:
    deadline = time.monotonic() + 10
    while not (kids := descendants(proxy.pid)):
        if time.monotonic() > deadline:
            raise BenchError("no child started")
        time.sleep(0.01)
    return kids[0]


def disconnect_to_stop(procs: Processes, runs: int) -> dict:
    """Seconds from a client closing its stream to its server process being gone."""
    proxy = Proxy(procs, "proxy-disconnect", ("--keepalive", "60"))
    result = {}
    try:
        for name, make in (("sse", lambda: SseSession(proxy.port)),
                           ("streamable_get", lambda: StreamableSession(proxy.port))):
            times = []
            for _ in range(runs):
                session = make()
                session.initialize()
                stream = None
                if name == "streamable_get":
                    stream = HttpConn(proxy.port)
                    stream.send_request("GET", "/mcp", {**session.headers,
                                                        "Accept": "text/event-stream"})
                    stream.read_head()
                pid = _wait_child(proxy)
                t0 = time.perf_counter()
                (stream or session).close()
                while not _gone(pid):
                    if time.perf_counter() - t0 > 30:
                        raise BenchError(f"{name}: the server outlived its client by 30 s")
                    time.sleep(0.005)
                times.append(time.perf_counter() - t0)
                session.close()
                proxy.wait_sessions(0)
            result[name] = {"runs": runs, "median_s": statistics.median(times),
                            "max_s": max(times)}
        return result
    finally:
        proxy.stop()


if __name__ == "__main__":  # a quick look at just these two figures
    procs = Processes(Path(tempfile.mkdtemp(prefix="mcp-proxy-bench-")), False)
    try:
        log("slow reader")
        print(json.dumps(slow_reader_memory(procs), indent=2))
        log("disconnects")
        print(json.dumps(disconnect_to_stop(procs, 5), indent=2))
    finally:
        procs.stop_all()
