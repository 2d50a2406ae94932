"""Probes for load balancers and kubelets: ``/healthz``, ``/readyz`` and ``/metrics``.

Readiness asks one thing per configured server: can a new session get a working child now?
Not when its command no longer resolves, when its last spawn failed (for ``SPAWN_HOLD``
seconds or until a spawn succeeds), or when it is in a crash loop: its last
``CRASH_STREAK`` children each exited with an error status (a code > 0) within
``EARLY_EXIT`` seconds of their start, all inside the last ``CRASH_WINDOW`` seconds. Any
other exit (a clean one, one after a long life) ends the streak; a death by signal does not
count, because we signal children ourselves when they ignore the end of their stdin. The
probes never spawn anything.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify

from mcp_proxy.errors import ConfigError
from mcp_proxy.metrics import server_label

if TYPE_CHECKING:
    from mcp_proxy.server.sessions import Registry

PROBE_ENDPOINTS = frozenset(("healthz", "readyz", "metrics"))
SPAWN_HOLD = 30.0
CRASH_STREAK = 3
EARLY_EXIT = 10.0
CRASH_WINDOW = 60.0


class ServerHealth:
    """What one configured server's children did lately: spawn failures and early crashes."""

    def __init__(self) -> None:
        self.spawn_error: str | None = None
        self.spawn_error_at = 0.0
        self.last_exit: int | None = None
        self._crashes: deque[float] = deque(maxlen=CRASH_STREAK)

    def spawned(self) -> None:
        self.spawn_error = None

    def spawn_failed(self, error: str) -> None:
        self.spawn_error, self.spawn_error_at = error, time.monotonic()

    def exited(self, code: int | None, lifetime: float) -> None:
        """Record a reaped child that ran ``lifetime`` seconds."""
        self.last_exit = code
        if code is not None and code > 0 and lifetime <= EARLY_EXIT:
            self._crashes.append(time.monotonic())
        else:
            self._crashes.clear()

    def problems(self, now: float) -> list[str]:
        found = []
        if self.spawn_error is not None and now - self.spawn_error_at < SPAWN_HOLD:
            found.append(f"spawn failed {now - self.spawn_error_at:.0f} s ago: "
                         f"{self.spawn_error}")
        crashes = self._crashes
        if len(crashes) == CRASH_STREAK and now - crashes[0] <= CRASH_WINDOW:
            found.append(f"crash loop: the last {CRASH_STREAK} server processes exited with "
                         f"an error within {EARLY_EXIT:g} s of their start (last exit code "
                         f"{self.last_exit})")
        return found


def readiness(registry: Registry) -> dict[str, dict]:
    """Per server: ``{"ready": bool}`` plus ``"reasons"`` when it is not ready."""
    now = time.monotonic()
    report = {}
    for name, spec in registry.settings.servers.items():
        reasons = registry.supervisor.problems(name, now)
        try:
            spec.check()
        except ConfigError as exc:
            reasons.insert(0, str(exc))
        report[server_label(name)] = {"ready": not reasons, **({"reasons": reasons}
                                                               if reasons else {})}
    return report


def add_health_routes(app: Flask, registry: Registry) -> None:
    """The three probes, at the root only; the guard lets them pass without token or Host."""

    @app.get("/healthz")
    def healthz():
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz():
        servers = readiness(registry)
        ready = all(server["ready"] for server in servers.values())
        return jsonify({"ready": ready, "servers": servers}), 200 if ready else 503

    @app.get("/metrics")
    def metrics():
        return Response(registry.metrics.exposition(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")
