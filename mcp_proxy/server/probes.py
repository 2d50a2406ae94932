"""Probes for load balancers and kubelets: ``/healthz``, ``/readyz`` and ``/metrics``.

This module owns the probes' routes and the readiness report (``/status`` shows it too); the
guard lets the probes pass without token or Host check (guard.PROBE_ENDPOINTS).

Readiness asks one thing per configured server: can a new session get a working child now?
Not when its command no longer resolves, or when its children's record
(:class:`mcp_proxy.children.health.ServerHealth`) shows a failed spawn or a crash loop. The
probes never spawn anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from flask import Flask, Response, jsonify

from mcp_proxy.errors import ConfigError
from mcp_proxy.server.metrics import Metrics, server_label

if TYPE_CHECKING:
    from mcp_proxy.config.settings import ServerSettings


class Troubles(Protocol):
    """What readiness asks of the children (children.supervisor's ``Supervisor``)."""

    def problems(self, server_name: str, now: float) -> list[str]: ...


class Probed(Protocol):
    """What the probes read of the app's registry (sessions.py's ``Registry``)."""

    settings: ServerSettings
    supervisor: Troubles
    metrics: Metrics


def readiness(registry: Probed) -> dict[str, dict]:
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


def add_health_routes(app: Flask, registry: Probed) -> None:
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
