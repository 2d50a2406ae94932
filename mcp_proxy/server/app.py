"""The Flask app of server mode: ``create_app(settings)``.

This module owns the assembly: the registry, the guard, each server's routes and relay, the
probes and ``/status``, and with ``--redis-url`` the router and the worker's exit when its
inbox fails. It handles no request itself; cli.py and wsgi.py call it.

Each server, stdio or remote (``"url"``), gets the same URL layout: the default one at the
root (``/sse``, ``/messages/``, ``/mcp``), each named one under ``/servers/<name>/``.
``/status`` and the probes (``/healthz``, ``/readyz``, ``/metrics``) are global.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from functools import partial

import gevent
from flask import Flask
from flask.sessions import NullSession, SessionInterface
from werkzeug.routing import Rule

from mcp_proxy.children.combined import Combiner
from mcp_proxy.children.combined_check import combined_problems
from mcp_proxy.children.lane import ModernLane
from mcp_proxy.children.legacy_adapter import LegacySession
from mcp_proxy.children.legacy_bridge import LegacyBridge
from mcp_proxy.children.modern_child import ModernChildAsLegacy
from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.children.process import StdioChild
from mcp_proxy.children.shared_remote import SharedRemote
from mcp_proxy.children.supervisor import Supervisor
from mcp_proxy.config.settings import ServerSettings, ServerSpec
from mcp_proxy.core import tracing
from mcp_proxy.core.log_format import set_worker
from mcp_proxy.server.api_keys import KeyRing
from mcp_proxy.server.audit import AuditMeter
from mcp_proxy.server.guard import install_guard
from mcp_proxy.server.http_spans import name_by_route, trace_requests
from mcp_proxy.server.late_routes import RouteBook, ServedPaths
from mcp_proxy.server.metrics import server_label
from mcp_proxy.server.probes import add_health_routes
from mcp_proxy.server.relay import Relay
from mcp_proxy.server.reload import Reloader
from mcp_proxy.server.sessions import Registry
from mcp_proxy.server.sse_transport import add_sse_routes
from mcp_proxy.server.status import add_status_route
from mcp_proxy.server.streamable_transport import add_streamable_routes
from mcp_proxy.server.tool_scopes import ToolScopes
from mcp_proxy.server.traced_meter import TracedMeter
from mcp_proxy.server.url_adapter import PathRouting
from mcp_proxy.upstream.remote_server import RemoteServer

logger = logging.getLogger(__name__)


class Route(Rule):
    """A rule that does not take HEAD, which werkzeug adds to every GET rule.

    GET on ``/sse`` and ``/mcp`` opens an event stream (and a session): a HEAD cannot be
    answered as "GET without the body" without doing that, so no path takes HEAD, and no
    ``Allow`` header names it.
    """

    def __init__(self, string: str, **kwargs) -> None:
        super().__init__(string, **kwargs)
        if self.methods is not None:
            self.methods.discard("HEAD")


class NoSessions(SessionInterface):
    """No cookie sessions: nothing here uses them, and opening an empty one per request
    cost a signing-key check and a dict."""

    _null = NullSession()  # read-only: Flask refuses writes to it

    def open_session(self, app, request):
        return self._null

    def save_session(self, app, session, response) -> None:
        pass


class ProxyFlask(PathRouting, Flask):
    """Flask with routes that do not take HEAD, and less work per request where Flask's
    defaults serve features this app does not use.

    * The URL adapter matches on the path alone (:class:`PathRouting`, url_adapter.py); the
      guard checks Host (guard.py).
    * ``ensure_sync``: there are no async views, so the per-call inspection of every view
      and hook for a coroutine is skipped.
    * No cookie sessions (:class:`NoSessions`).
    """

    url_rule_class = Route
    session_interface = NoSessions()

    def ensure_sync(self, func):
        return func


def create_app(settings: ServerSettings, reload_on_hangup: bool = True) -> Flask:
    """Build the WSGI app; its session registry is ``app.extensions["mcp_proxy"]``. With
    ``reload_on_hangup`` (not under gunicorn, whose arbiter owns SIGHUP) and a config file,
    SIGHUP reloads the file (reload.py)."""
    app = ProxyFlask("mcp_proxy")
    registry = Registry(settings)
    # the composition root: the supervisor is told which classes it starts
    registry.supervisor = Supervisor(settings, registry.metrics, StdioChild, Multiplexer,
                                     ModernLane, RemoteServer, face=ModernChildAsLegacy,
                                     bridge=partial(LegacyBridge, session=LegacySession),
                                     combiner=Combiner, shared_remote=SharedRemote)
    remotes = registry.supervisor.remotes
    # read at each scrape, from what serves now (a config reload adds and removes servers)
    registry.metrics.remotes = lambda: {name: r.status() for name, r in list(remotes.items())}
    registry.metrics.members = partial(_members, registry.supervisor)
    registry.supervisor.probe_remotes()  # a remote that can never work refuses the start
    for name, spec in settings.servers.items():  # only their bridges pay for an audit
        _instrument(registry, name, spec)
    if tracing.on:  # configured by the command (cli.py, wsgi.py): off, nothing is wrapped
        registry.metrics.traced = TracedMeter
    app.extensions["mcp_proxy"] = registry
    keys = KeyRing(settings) if settings.api_keys or settings.auth_token_file else None
    hangup = []  # what SIGHUP does: one handler for both
    if keys is not None and keys.path is not None:  # rotate keys without a restart
        hangup.append(keys.reload)
        keys.on_revoked = registry.end_sessions_of
    checks = install_guard(app, settings, registry.touch, keys)
    if settings.redis_url:
        from mcp_proxy.server.scaleout.router import Router  # imports redis: only when asked for

        registry.router = Router(settings, registry.handlers, registry.touch,
                                 lambda exc: _exit_worker(registry, exc))
        registry.metrics.routing = registry.router.status
        set_worker(registry.router.tag)

    paths = ServedPaths(app, registry, partial(_add_routes, registry))
    for name in settings.servers:
        paths.serve(name)
    if reload_on_hangup and settings.reread is not None:
        registry.reloads = Reloader(registry, paths, settings.reread,
                                    partial(combined_problems, remote=RemoteServer),
                                    RemoteServer, partial(_instrument, registry))
        hangup.append(registry.reloads.hangup)
    if hangup:
        gevent.signal_handler(signal.SIGHUP, _each, hangup)
    add_status_route(app, registry)
    add_health_routes(app, registry)
    if registry.router is not None:  # inside the metrics: a forwarded answer counts once
        app.wsgi_app = registry.router.wrap(app, checks)
        registry.router.start()
    app.wsgi_app = registry.metrics.count_answers(app.wsgi_app)
    if tracing.on:  # outermost: a forwarded request has its span where it landed too
        app.wsgi_app = trace_requests(app.wsgi_app)
        app.before_request(name_by_route)
    return app


def _members(supervisor: Supervisor) -> dict:
    """Each combined server's members, as /metrics shows them (children/combined_status.py)."""
    now = time.monotonic()
    return {server_label(name): supervisor.combined.members(name, now)
            for name, spec in list(supervisor.settings.servers.items()) if spec.members}


def _each(actions: list) -> None:
    for action in actions:
        action()


def _add_routes(registry: Registry, book: RouteBook, name: str) -> None:
    """The routes of one server: HTTP+SSE and Streamable HTTP."""
    add_sse_routes(book, registry, name)
    add_streamable_routes(book, registry, name, Relay(registry, name, registry.settings.keepalive))


def _instrument(registry: Registry, name: str, spec: ServerSpec) -> None:
    """A server's audit (only its bridges pay for it) and its tool scopes."""
    label, settings = server_label(name), registry.settings
    registry.metrics.audited.pop(label, None)
    if spec.audit:
        registry.metrics.audited[label] = partial(AuditMeter, server=label,
                                                  arguments=settings.log_call_arguments)
    registry.tool_scopes.pop(name, None)
    if spec.tool_scopes and settings.oauth is not None:
        registry.tool_scopes[name] = ToolScopes(spec, settings.oauth)


def _exit_worker(registry: Registry, exc: BaseException) -> None:
    """The bus inbox failed for good: exit rather than own sessions nobody can reach.

    gunicorn starts a new worker; the children get SIGTERM now (their stdin closes anyway).
    """
    logger.critical("the Redis inbox of this worker failed (%s: %s); exiting so that it does "
                    "not live on as an owner nobody can reach", exc.__class__.__name__, exc)
    registry.supervisor.signal_all()
    logging.shutdown()
    os._exit(70)
