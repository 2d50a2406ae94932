"""Which worker serves a request, with ``--redis-url``: here, or the session's owner.

A session lives in the worker that opened it (its child is a process of that worker), and
its id starts with that worker's tag. A request for a session of another worker is forwarded
to it over the bus (forward.py); the owner runs it in-process through the handler its own
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

Whether an owner still answers is watched here, a few times a second. An owner whose inbox
has no reader while a call waits on it (a probe frame, which every worker drops, is counted
0 by PUBLISH) is dying or reconnecting: after the bus grace (at once if its worker key is
gone) its calls end as for an unknown session (404), not after three missed pings; a killed
worker stays subscribed for a moment as the kernel tears it down, so a request sent then
reached nobody although PUBLISH counted it. A call's owner is never judged silent while
this worker could not have heard it: while its own inbox is down (up to the bus
``OUTAGE``), or right after the process was stopped (SIGSTOP, a suspended VM), when every
timer is overdue at once.
"""

from __future__ import annotations

import io
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
from mcp_proxy.server.responses import query_session, read_body
from mcp_proxy.server.scaleout import forwarder as fwd
from mcp_proxy.server.scaleout import owner as owning
from mcp_proxy.server.scaleout.bus import GRACE, OUTAGE, Bus, decode, encode
from mcp_proxy.server.sessions import TAGGED_ID

logger = logging.getLogger(__name__)

ROUTE_HEADER = "Mcp-Proxy-Route"
TICK = 0.2  # how often owners are watched
QUIET = 0.1  # a call that heard nothing for this long has its owner's inbox checked
STALLED = 1.0  # a tick this late means the process was not running
_PROBE = encode({"k": "probe"})  # no call's frame: its owner drops it


def _ping_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("MCP_PROXY_BUS_PING", "5")))
    except ValueError:
        return 5.0


class Router:
    """Both ends of forwarding for one app."""

    def __init__(self, settings: ServerSettings, handlers: dict, touch: Callable[[], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.settings = settings
        self.handlers = handlers  # (path, method) -> a session request's handler
        self.touch = touch
        self.ping = _ping_interval()
        self.bus = Bus(settings.redis_url, self._on_frame, on_fatal)
        self.tag = self.bus.tag
        self.calls: dict[str, fwd.Call] = {}  # our requests at other workers
        # other workers' requests served here, by (receiving worker's tag, its number)
        self.served: dict[tuple[str, str], owning.Served] = {}
        self.reaped: set = set()  # the registry's, once wrapped: stall checks of streams
        self.counts = {"local": 0, "forwarded": 0, "served": 0}
        self.route_header = os.environ.get("MCP_PROXY_ROUTE_HEADER", "") not in ("", "0")
        self.napping_since: float | None = None  # when the watcher went to sleep
        self.vanished: dict[str, float] = {}  # owner tag -> since when its inbox has no reader
        request_state.set_worker_tag(self.tag)  # a requestState handle names its sealing worker

    def start(self) -> None:
        self.bus.start()
        self._alive = greenlets.spawn(self._heartbeat, name="bus heartbeat",
                                      on_error=self.bus.on_fatal)
        self._watcher = greenlets.spawn(self._watch, name="bus owner watch",
                                        on_error=self.bus.on_fatal)

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
                owning.send_alive(self, deaf)
            except BusDown:
                pass  # the reader reports the outage; both sides allow three pings
            try:
                fwd.send_held(self)
            except BusDown:
                pass

    def stop(self) -> None:
        self._alive.kill(block=False)
        self._watcher.kill(block=False)
        for call in list(self.calls.values()):  # their owners' answers can no longer come
            call.stop("this worker is shutting down")
        self.bus.stop()

    def count(self, route: str) -> None:
        self.counts[route] += 1

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
                "routing": "ok" if state == "connected" else "degraded", **self.counts}

    # -- the receiving side -------------------------------------------------------------

    def wrap(self, app: Flask, checks: Checks) -> Callable:
        """The app's WSGI callable, forwarding what is not ours before Flask sees it.

        Deciding costs a dict lookup and a header (or query) read; a forwarded request is
        checked here (Host, Origin, token) and never enters Flask on this worker.
        """
        flask_app = app.wsgi_app
        self.reaped = app.extensions["mcp_proxy"].requests  # forwarded streams: stall checks
        limit = self.settings.max_body
        paths: dict[str, tuple[str, ...]] = {}
        for name in self.settings.servers:
            prefix = f"/servers/{name}" if name else ""
            paths[prefix + "/messages/"] = ("POST",)
            paths[prefix + "/mcp"] = paths[prefix + "/mcp/"] = ("POST", "GET", "DELETE")
        route_header = self.route_header

        def routing_app(environ: dict, start_response):
            methods = paths.get(environ.get("PATH_INFO", ""))
            if methods is not None and environ["REQUEST_METHOD"] in methods:
                owner = self.owner_of(environ.get("HTTP_MCP_SESSION_ID")
                                      or query_session(environ.get("QUERY_STRING", "")))
                if owner is None:
                    self.count("local")
                else:
                    response = checks.where(environ) or checks.token(environ) or \
                        self.forward(environ, owner, limit)
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

    def forward(self, environ: dict, owner: str, limit: int, body: bytes | None = None
                ) -> Response | None:
        """Forward this request to ``owner``; None lets the local view answer (owner gone)."""
        if body is None:
            body = read_body(environ, limit)
            if isinstance(body, Response):
                return body
        # an inbox coming back (Redis restarted, the process resumed) takes a moment: wait
        # for it rather than answer 503 at once
        self.bus.listening.wait(STALLED)
        response = fwd.forward(self, environ, body, owner)
        if response is None:  # the local view answers, as for any session it does not know
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            logger.info("worker %s does not answer: its sessions are gone", owner)
            return None
        environ["mcp_proxy.route"] = "forwarded"
        return response

    # -- the inbox ----------------------------------------------------------------------

    def _on_frame(self, data: bytes) -> None:
        """From the inbox reader: never blocks."""
        try:
            header, payload = decode(data)
            kind = header["k"]
        except (ValueError, KeyError, TypeError):
            logger.warning("worker %s: dropped a malformed bus frame (%d bytes)", self.tag,
                           len(data))
            return
        try:  # a frame of the wrong shape (from a bug, or anyone who can PUBLISH) is
            self._dispatch(kind, header, payload)  # dropped; it must not end the reader
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("worker %s: dropped a malformed %.20r bus frame: %s: %s", self.tag,
                           kind, exc.__class__.__name__, exc)

    def _dispatch(self, kind, header: dict, payload: bytes) -> None:
        if kind == "call":
            if not owning.well_formed(header):
                raise ValueError("a call frame without the fields it needs")
            greenlets.spawn(owning.serve, self, header, payload, name="forwarded request")
        elif kind == "cancel":
            served = self.served.get((header.get("f"), header.get("c")))
            if served is not None:
                served.cancel()
        elif kind == "held":
            now, sender = time.monotonic(), header.get("f")
            for corr in header.get("cs", ()):
                served = self.served.get((sender, corr))
                if served is not None:
                    served.heard = now
        elif kind == "alive":
            now = time.monotonic()
            for corr in header.get("cs", ()):
                call = self.calls.get(corr)
                if call is not None:
                    call.seen, call.heard = now, True
        else:
            call = self.calls.get(header.get("c"))
            if call is not None:
                call.take(header, payload)

    # -- watching owners ----------------------------------------------------------------

    def may_judge(self, call) -> bool:
        """Whether ``call``'s silence may be held against its owner now: not while the
        process has just resumed (every timer is overdue at once, before the watcher has
        run), nor while the owner's inbox has no reader (the watcher ends it as gone)."""
        since = self.napping_since
        awake = since is None or time.monotonic() - since < TICK + STALLED
        return awake and call.owner not in self.vanished

    def _watch(self) -> None:
        deaf_since: float | None = None
        while True:
            self.napping_since = time.monotonic()
            gevent.sleep(TICK)
            now = time.monotonic()
            stalled = now - self.napping_since > TICK + STALLED
            self.napping_since = None
            if not self.bus.listening.is_set():
                deaf_since = deaf_since or now
            elif deaf_since is not None:
                deaf_since, stalled = None, True  # frames sent meanwhile came to nobody
            if stalled or (deaf_since is not None and now - deaf_since < OUTAGE):
                for call in list(self.calls.values()):  # we could not hear: not their fault
                    call.seen = now
            if deaf_since is not None:
                self.vanished.clear()  # nothing is known of any owner now
            elif not stalled:
                self._check_owners(now)

    def _check_owners(self, now: float) -> None:
        """End the calls of owners whose inbox has had no reader for the grace."""
        waiting: dict[str, list] = {}
        for call in list(self.calls.values()):
            # only a call its owner never confirmed (no frame, no ``alive``): one it did has
            # reached the owner, which the heartbeat rule judges (an answer, never a 404)
            if not call.heard and now - call.seen > QUIET:
                waiting.setdefault(call.owner, []).append(call)
        for tag in self.vanished.keys() - waiting.keys():
            del self.vanished[tag]  # it answered, or nothing waits on it: start afresh
        if not waiting:
            return
        for tag, calls in waiting.items():
            try:  # how many read its inbox: a frame every owner ignores, as PUBLISH counts
                if self.bus.send(tag, _PROBE):
                    self.vanished.pop(tag, None)
                    continue
            except BusDown:
                return  # the inbox reader sees the outage
            since = self.vanished.setdefault(tag, now)
            if now - since >= GRACE or not self.bus.claimed(tag):
                logger.warning("worker %s has stopped listening on Redis: its sessions are "
                               "gone", tag)
                self.vanished.pop(tag, None)
                for call in calls:
                    call.take({"k": "gone"}, b"")
