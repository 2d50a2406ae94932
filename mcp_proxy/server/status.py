"""``GET /status``: health and usage, with the keys mcp-proxy 0.13 reported and more.

This module owns the report's shape; it reads the registry, its supervisor and the probes'
readiness, and changes nothing (it only counts as API activity, in the guard).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from flask import Flask, jsonify

from mcp_proxy import __version__
from mcp_proxy.server.probes import readiness
from mcp_proxy.server.sessions import Registry


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


def _lane(supervisor, name: str) -> dict:
    """The 2026-07-28 lane of a server: its state, and the bridge a legacy-only one uses (a
    combined server, or a remote over HTTP+SSE, has the bridge and no lane)."""
    lane = supervisor.lanes.get(name)
    shown = {"state": "none", "legacy_only": True} if lane is None else \
        {"state": lane.state, "legacy_only": lane.legacy_only}
    if shown["legacy_only"]:
        bridge = supervisor.bridges.get(name)
        shown["bridge"] = "modern->legacy"
        shown["bridged_children"] = bridge.running() if bridge is not None else 0
    return shown


def add_status_route(app: Flask, registry: Registry) -> None:
    @app.get("/status")
    def status():
        sessions = list(registry.sessions.values())
        supervisor = registry.supervisor
        ready = readiness(registry)
        instances = {
            name or "default": {
                **({"command": spec.command} if spec.remote is None else
                   {"remote": supervisor.remotes[name].status()}),
                "mode": supervisor.mode(name),
                "sessions": sum(1 for s in sessions if s.server_name == name),
                "children": supervisor.running(name),
                "era": supervisor.eras.get(name, "unknown"),  # learned by the first session
                **({"shared_state": supervisor.shared[name].state}
                   if name in supervisor.shared else {}),
                **({"modern_lane": _lane(supervisor, name)}
                   if name in supervisor.lanes or name in supervisor.bridges else {}),
                **({"members": supervisor.combined.members(name, time.monotonic())}
                   if spec.members else {}),  # children/combined_status.py
                **ready[name or "default"],
            }
            for name, spec in registry.settings.servers.items()
        }
        return jsonify({
            "api_last_activity": _iso(registry.last_activity),
            "active_sse_connections": sum(1 for s in sessions if s.transport == "sse"),
            "server_instances": instances,
            "version": __version__,
            "sessions": len(sessions),
            "children_started": supervisor.spawned,
            "max_sessions": registry.settings.max_sessions,
            "stateless": registry.settings.stateless,
            **({"config": registry.reloads.status()} if registry.reloads is not None else {}),
            "worker": registry.router.status() if registry.router is not None else
            {"pid": os.getpid(), "redis": "off", "routing": "local-only"},
            "session_details": [{
                "id": s.id[-8:],  # as it is named in the log (sessions.py)
                "transport": s.transport,
                "server": s.server_name or "default",
                "started": _iso(s.created),
                "child": supervisor.describe(s.upstream),
            } for s in sessions],
        })
