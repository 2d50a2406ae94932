"""Probes for load balancers and kubelets: ``/healthz``, ``/readyz`` and ``/metrics``.

Readiness asks one thing per configured server: can a new session get a working child now?
Not when its command no longer resolves, or when its children's record
(:class:`mcp_proxy.children.health.ServerHealth`) shows a failed spawn or a crash loop. The
probes never spawn anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify

from mcp_proxy.errors import ConfigError
from mcp_proxy.server.metrics import server_label

if TYPE_CHECKING:
    from mcp_proxy.server.sessions import Registry

PROBE_ENDPOINTS = frozenset(("healthz", "readyz", "metrics"))


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
