"""Which worker serves a request, with ``--redis-url``: here, or the session's owner.

A session lives in the worker that opened it (its child is a process of that worker), and
its id starts with that worker's tag. A request for a session of another worker is forwarded
to it over the bus (forward.py); the owner runs it in-process through the handler its own
Flask view calls (no second dispatch), as if its own client had sent it, and streams the
answer back frame by frame (``_serve``). The handler answers only once the message is handed
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

import io
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from flask import Flask, Response, request

from mcp_proxy import jsonrpc, modern, supervise
from mcp_proxy.server import forward as fwd
from mcp_proxy.server.bus import GRACE, BlobLost, Bus, BusDown, decode
from mcp_proxy.server.guard import Checks
from mcp_proxy.server.http import query_session, read_body, rpc_error
from mcp_proxy.server.sessions import TAGGED_ID
from mcp_proxy.settings import ServerSettings

logger = logging.getLogger(__name__)

ROUTE_HEADER = "Mcp-Proxy-Route"
# hop-by-hop headers of the owner's answer, which the receiving worker's server sets itself
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _ping_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("MCP_PROXY_BUS_PING", "5")))
    except ValueError:
        return 5.0


class _Closing:
    """A response's body iterable whose ``close`` closes the response (and its Body)."""

    def __init__(self, response: Response) -> None:
        self.response = response

    def __iter__(self):
        return iter(self.response.response)

    def close(self) -> None:
        self.response.close()


class Served:
    """A request this worker serves for another: where to send its frames, how to cancel.

    Its response registers its disconnect hook with ``append`` (streams.Body); a cancel that
    came first fires the hook at once.
    """

    def __init__(self, sender: str, corr: str) -> None:
        self.sender = sender
        self.corr = corr
        self.hooks: list[Callable[[], None]] = []
        self.cancelled = False

    def append(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)
        if self.cancelled:
            hook()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            for hook in self.hooks:
                hook()


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
        self.app: Callable | None = None  # the Flask WSGI app, without middleware
        self.calls: dict[str, fwd.Call] = {}  # our requests at other workers
        self.served: dict[str, Served] = {}  # other workers' requests served here
        self.counts = {"local": 0, "forwarded": 0, "served": 0}
        self.route_header = os.environ.get("MCP_PROXY_ROUTE_HEADER", "") not in ("", "0")
        modern.set_worker_tag(self.tag)  # a requestState handle names its sealing worker

    def start(self) -> None:
        self.bus.start()
        self._alive = supervise.spawn(self._send_alive, name="bus heartbeat",
                                      on_error=self.bus.on_fatal)

    def stop(self) -> None:
        self._alive.kill(block=False)
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
        tag = modern.handle_worker(handle)
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
        self.app = flask_app = app.wsgi_app
        limit = self.settings.max_body
        paths: dict[str, tuple[str, ...]] = {}
        for name in self.settings.servers:
            prefix = f"/servers/{name}" if name else ""
            paths[prefix + "/messages/"] = ("POST",)
            paths[prefix + "/mcp"] = paths[prefix + "/mcp/"] = ("POST", "GET", "DELETE")
        route_header = self.route_header

        def routing_app(environ: dict, start_response):
            methods = paths.get(environ.get("PATH_INFO", ""))
            if methods is not None and environ["REQUEST_METHOD"] in methods \
                    and "mcp_proxy.forwarded" not in environ:
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
        if kind == "call":
            supervise.spawn(self._serve, header, payload, name="forwarded request")
        elif kind == "cancel":
            served = self.served.get(header.get("c"))
            if served is not None:
                served.cancel()
        elif kind == "alive":
            now = time.monotonic()
            for corr in header.get("cs", ()):
                call = self.calls.get(corr)
                if call is not None:
                    call.seen = now
        else:
            call = self.calls.get(header.get("c"))
            if call is not None:
                call.take(header, payload)

    def _send_alive(self) -> None:
        while True:
            gevent.sleep(self.ping)
            senders: dict[str, list[str]] = {}
            for served in list(self.served.values()):
                senders.setdefault(served.sender, []).append(served.corr)
            for sender, corrs in senders.items():
                try:
                    self.bus.post(sender, {"k": "alive", "f": self.tag, "cs": corrs})
                except BusDown:
                    break

    # -- the owning side ----------------------------------------------------------------

    def _serve(self, header: dict, payload: bytes) -> None:
        """Run another worker's request through the app; stream its answer back."""
        sender, corr = header["f"], header["c"]
        served = self.served[corr] = Served(sender, corr)
        self.count("served")
        result = None
        try:
            body = self.bus.payload(header, payload)
            environ = self._environ(header, body, served)
            status, headers, result = self._run(environ)
            headers = [(k, v) for k, v in headers if k.lower() not in _HOP]
            streaming = any(k.lower() == "content-type" and v.startswith("text/event-stream")
                            for k, v in headers)
            reply = self.bus.post
            if not streaming:
                if not reply(sender, {"k": "resp", "c": corr, "st": status, "h": headers},
                             b"".join(result), GRACE):
                    logger.warning("worker %s: worker %s is gone; its client's answer was "
                                   "dropped", self.tag, sender)
                return
            if not reply(sender, {"k": "head", "c": corr, "st": status, "h": headers},
                         b"", GRACE):
                served.cancel()  # the receiving worker is gone: its client too
            for chunk in result:
                if served.cancelled or not reply(sender, {"k": "data", "c": corr}, chunk,
                                                 GRACE):
                    served.cancel()
                    break
            else:
                reply(sender, {"k": "end", "c": corr}, b"", GRACE)
        except (BusDown, BlobLost) as exc:
            logger.warning("worker %s: a request forwarded by worker %s failed: %s", self.tag,
                           sender, exc)
            served.cancel()
        finally:
            if result is not None and hasattr(result, "close"):
                result.close()
            self.served.pop(corr, None)

    def _run(self, environ: dict) -> tuple[int, list, Any]:
        """(status, headers, body iterable) of a forwarded request, run here.

        A session request goes straight to its handler, the one its Flask view calls (no
        second dispatch); anything else (none is forwarded today) through the whole app.
        """
        handler = self.handlers.get((environ["PATH_INFO"], environ["REQUEST_METHOD"]))
        if handler is None:
            started: list = []
            result = self.app(environ, lambda status, headers, exc_info=None:
                              started.extend((status, headers)))
            return int(started[0].split(None, 1)[0]), started[1], result
        self.touch()
        try:
            response = handler(environ)
        except Exception:  # as Flask would: a 500, and the traceback in the log
            logger.exception("worker %s: a forwarded %s %s failed", self.tag,
                             environ["REQUEST_METHOD"], environ["PATH_INFO"])
            response = rpc_error(500, jsonrpc.INTERNAL_ERROR, "Internal Server Error")
        return response.status_code, list(response.headers.items()), _Closing(response)

    def _environ(self, header: dict, body: bytes, served: Served) -> dict:
        environ = {
            "REQUEST_METHOD": header["m"], "SCRIPT_NAME": "", "PATH_INFO": header["p"],
            "QUERY_STRING": header["q"], "SERVER_NAME": "mcp-proxy", "SERVER_PORT": "0",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0),
            "wsgi.url_scheme": header["s"], "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
            "mcp_proxy.forwarded": header["f"], "mcp_proxy.auth": header["a"],
            "mcp_proxy.on_gone": served,
        }
        environ.update(header["h"])
        return environ
