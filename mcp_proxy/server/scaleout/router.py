"""Which worker serves a request, with ``--redis-url``: here, or the session's owner.

It owns the wiring of scale-out: the bus, the :class:`Forwarder` (this worker's calls at
others), the :class:`Owner` (others' calls served here) and the heartbeat both speak on; and
it dispatches: a request to the local view or to the forwarder, a frame the inbox read to the
forwarder or to the owner. It holds no call's state and never answers a request itself.

A session lives in the worker that opened it (its child is a process of that worker), and
its id starts with that worker's tag. A request for a session of another worker is forwarded
to it over the bus (forwarder.py); the owner runs it in-process through the handler its own
Flask view calls (no second dispatch), as if its own client had sent it, and streams the
answer back frame by frame (owner.py). The handler answers only once the message is handed
to the session, so a 202 here means "delivered to the owner", and one client's POSTs reach
its server in the order it sent them.

The receiving side wraps the app's WSGI callable, before Flask: a request that names a
session (``session_id`` of ``/messages/``, ``Mcp-Session-Id`` of ``/mcp``) of another worker
is checked there (Host, Origin, token) and forwarded, without a Flask dispatch of its own; a
2026-07-28 request's ``requestState`` handle is routed by the modern relay. A forwarded
request skips the guard at its owner: it was checked where it landed, and its credentials
do not travel.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import gevent
from flask import Flask, Response, request

from mcp_proxy.children import request_state
from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core import greenlets
from mcp_proxy.errors import BusDown
from mcp_proxy.server.guard import Checks
from mcp_proxy.server.responses import query_session
from mcp_proxy.server.scaleout.bus import Bus
from mcp_proxy.server.scaleout.forwarder import Forwarder
from mcp_proxy.server.scaleout.frames import decode
from mcp_proxy.server.scaleout.owner import Owner
from mcp_proxy.server.sessions import TAGGED_ID

logger = logging.getLogger(__name__)

ROUTE_HEADER = "Mcp-Proxy-Route"


def _ping_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("MCP_PROXY_BUS_PING", "5")))
    except ValueError:
        return 5.0


class Router:
    """Both ends of forwarding for one app: dispatches to them, and wires them to the bus."""

    def __init__(self, settings: ServerSettings, handlers: dict, touch: Callable[[], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.settings = settings
        self.ping = _ping_interval()
        self.bus = Bus(settings.redis_url, self._on_frame, on_fatal)
        self.tag = self.bus.tag
        self.forwarder = Forwarder(settings, self.bus, self.ping)  # our requests at others
        self.owner = Owner(self.bus, handlers, touch, self.ping)  # others' requests here
        self.local = 0  # requests for sessions of this worker
        self.paths: dict[str, tuple[str, ...]] = {}  # session request paths -> their methods
        self.route_header = os.environ.get("MCP_PROXY_ROUTE_HEADER", "") not in ("", "0")
        request_state.set_worker_tag(self.tag)  # a requestState handle names its sealing worker

    def start(self) -> None:
        self.bus.start()
        self._alive = greenlets.spawn(self._heartbeat, name="bus heartbeat",
                                      on_error=self.bus.on_fatal)
        self.forwarder.start()

    def _heartbeat(self) -> None:
        """Each ping interval: ``alive`` to the workers we serve, ``held`` to our owners."""
        while True:
            slept = time.monotonic()
            gevent.sleep(self.ping)
            # while our inbox was down, or the process was stopped (SIGSTOP, a suspended
            # VM: this sleep overran), no receiving worker could make itself heard here
            deaf = self.bus.state != "connected" or \
                time.monotonic() - slept > 2 * self.ping + 1.0
            try:
                self.owner.publish_alive(deaf)
            except BusDown:
                pass  # the reader reports the outage; both sides allow three pings
            try:
                self.forwarder.publish_held()
            except BusDown:
                pass

    def stop(self) -> None:
        self._alive.kill(block=False)
        self.forwarder.stop()  # its calls' answers can no longer come
        self.bus.stop()

    def new_session_id(self, hex_id: str) -> str:
        return self.tag + hex_id

    def owner_of(self, session_id: str | None) -> str | None:
        """The tag of the worker owning ``session_id`` if it is another worker, else None."""
        if session_id and len(session_id) == 40 and not session_id.startswith(self.tag) \
                and TAGGED_ID.match(session_id):
            return session_id[:8]
        return None

    def owner_of_handle(self, handle, environ: dict) -> str | None:
        """The tag of the worker that sealed a ``requestState`` handle, if another one."""
        if "mcp_proxy.forwarded" in environ:
            return None
        tag = request_state.handle_worker(handle)
        return tag if tag is not None and tag != self.tag else None

    def status(self) -> dict:
        state = self.bus.state
        return {"id": self.tag, "pid": os.getpid(), "redis": state,
                "routing": "ok" if state == "connected" else "degraded", "local": self.local,
                "forwarded": self.forwarder.count, "served": self.owner.count}

    # -- the receiving side -------------------------------------------------------------

    def route_paths(self, name: str) -> None:
        """Route the session requests of server ``name`` (at start, or added by a reload)."""
        prefix = f"/servers/{name}" if name else ""
        self.paths[prefix + "/messages/"] = ("POST",)
        self.paths[prefix + "/mcp"] = self.paths[prefix + "/mcp/"] = ("POST", "GET", "DELETE")

    def wrap(self, app: Flask, checks: Checks) -> Callable:
        """The app's WSGI callable, forwarding what is not ours before Flask sees it.

        Deciding costs a dict lookup and a header (or query) read; a forwarded request is
        checked here (Host, Origin, token) and never enters Flask on this worker.
        """
        flask_app = app.wsgi_app
        # forwarded streams join the registry's, for the reaper's stall checks
        self.forwarder.reaped = app.extensions["mcp_proxy"].requests
        forward = self.forwarder.forward
        limit = self.settings.max_body
        paths = self.paths
        for name in self.settings.servers:
            self.route_paths(name)
        route_header = self.route_header

        def routing_app(environ: dict, start_response):
            methods = paths.get(environ.get("PATH_INFO", ""))
            if methods is not None and environ["REQUEST_METHOD"] in methods:
                owner = self.owner_of(environ.get("HTTP_MCP_SESSION_ID")
                                      or query_session(environ.get("QUERY_STRING", "")))
                if owner is None:
                    self.local += 1
                else:
                    response = checks.where(environ) or checks.token(environ) or \
                        forward(environ, owner, limit)
                    if response is not None:
                        if checks.cors is not None:
                            checks.cors(environ, response)
                        if route_header:
                            response.headers[ROUTE_HEADER] = f"{self.tag} forwarded"
                        return response(environ, start_response)
            return flask_app(environ, start_response)

        if route_header:
            @app.after_request
            def mark(response: Response) -> Response:
                route = request.environ.get("mcp_proxy.route", "local")
                response.headers[ROUTE_HEADER] = f"{self.tag} {route}"
                return response

        return routing_app

    # -- the inbox ----------------------------------------------------------------------

    def _on_frame(self, data: bytes) -> None:
        """From the inbox reader (never blocks): a frame, to the side it is for."""
        try:
            header, payload = decode(data)
            kind = header["k"]
        except (ValueError, KeyError, TypeError):
            logger.warning("worker %s: dropped a malformed bus frame (%d bytes)", self.tag,
                           len(data))
            return
        # a frame of the wrong shape (from a bug, or anyone who can PUBLISH) is dropped; it
        # must not end the reader
        try:
            if kind == "call":
                self.owner.accept(header, payload)
            elif kind == "cancel":
                self.owner.cancel(header)
            elif kind == "held":
                self.owner.held(header)
            elif kind == "alive":
                self.forwarder.alive(header)
            else:  # a frame of an answer (a probe is for no call)
                self.forwarder.deliver(header, payload)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("worker %s: dropped a malformed %.20r bus frame: %s: %s", self.tag,
                           kind, exc.__class__.__name__, exc)
