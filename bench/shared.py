"""Many clients on one proxy: memory of idle and of connected clients, and calls/s with a
process per session and with ``--shared-child``, on the same bench.

``idle_sse_memory``: a fresh proxy (default settings); ``sessions`` idle SSE streams opened
(no message, so no server started); RSS before and with them.
``connected_memory``: a fresh proxy; ``clients`` SSE sessions that each initialize (so each
has its server) and then stay idle; RSS of the proxy and of the proxy with its children.
``shared_throughput``: calls/s at ``sessions`` sessions through a ``--shared-child`` proxy,
for both transports, measured exactly as the per-session figures are.
"""

from __future__ import annotations

import time

from clients import KEEPALIVE, Proxy, SseSession, StreamableSession
from measure import throughput
from procs import Processes, descendants, rss_kib


def idle_sse_memory(procs: Processes, sessions: int, batch: int = 100) -> dict:
    """A fresh proxy (default settings); open ``sessions`` idle SSE streams; RSS before and with."""
    proxy = Proxy(procs, "proxy-memory", ("--max-sessions", str(sessions + 100)))
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


def connected_memory(procs: Processes, clients: int, extra: tuple[str, ...]) -> dict:
    proxy = Proxy(procs, "proxy-connected", extra)
    sessions: list[SseSession] = []
    try:
        proxy.status()
        time.sleep(0.5)
        base = rss_kib(proxy.pid)
        for _ in range(clients):
            session = SseSession(proxy.port)
            sessions.append(session)
            session.initialize()
        time.sleep(1.0)
        kids = descendants(proxy.pid)
        rss = rss_kib(proxy.pid)
        total = rss + sum(rss_kib(k) for k in kids)
        return {"clients": clients, "children": len(kids), "proxy_rss_idle_mib": base / 1024,
                "proxy_rss_mib": rss / 1024, "with_children_rss_mib": total / 1024}
    finally:
        for session in sessions:
            session.close()
        proxy.stop()


def shared_throughput(procs: Processes, sessions: int, duration: float, warm: float) -> dict:
    proxy = Proxy(procs, "proxy-shared", ("--keepalive", str(KEEPALIVE), "--shared-child"))
    try:
        return {
            "server/sse": throughput(lambda: SseSession(proxy.port), sessions, duration, warm,
                                     proxy.pid, proxy.pid),
            "server/streamable": throughput(lambda: StreamableSession(proxy.port), sessions,
                                            duration, warm, proxy.pid, proxy.pid),
        }
    finally:
        proxy.stop()
