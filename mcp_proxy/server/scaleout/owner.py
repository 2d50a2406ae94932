"""The owning worker's side of a forwarded request: run it here, stream its answer back.

It owns the requests this worker serves for others (the :class:`Owner`'s ``served``), the
frames of their answers, and the ``alive`` frames of its heartbeat. It never forwards a
request (forwarder.py does) and never runs one through a second dispatch.

A ``call`` frame is run in a greenlet of its own, straight through the handler its Flask
view would call (``registry.handlers``; no second dispatch), in an environ rebuilt from the
frame: marked forwarded (the guard ran where it landed) and carrying the caller's credential
digest instead of its credentials. A small answer goes back as one ``resp`` frame; an event
stream as ``head``, one ``data`` frame per event, ``end``. Every frame is resent while no
reader took it, for the bus grace (the receiving worker's inbox may be reconnecting); a
receiving worker that stays unreachable, or a ``cancel``, ends the request as its client's
disconnect would. Every ping interval, each receiving worker is told which of its calls are
still being served here (``alive``), so it can tell a slow answer from a dead owner; and a
call its receiving worker has not named (``held``) for three intervals is ended the same
way: its cancel was lost, or that worker is gone or stuck. Calls are numbered by their
receiving worker, so they are known here by (that worker's tag, number).
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable

from flask import Response

from mcp_proxy.core import greenlets, jsonrpc, tracing
from mcp_proxy.errors import BusError, ServerRemoved
from mcp_proxy.server.responses import rpc_error, server_removed
from mcp_proxy.server.scaleout.bus import GRACE, Bus
from mcp_proxy.server.scaleout.frames import well_formed

logger = logging.getLogger(__name__)

# hop-by-hop headers of the answer, which the receiving worker's server sets itself
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class Served:
    """A request this worker serves for another: where to publish its frames, how to cancel.

    Its response registers its disconnect hook with ``append`` (response_body.Body); a cancel that
    came first fires the hook at once.
    """

    def __init__(self, sender: str, corr: str) -> None:
        self.sender = sender
        self.corr = corr
        self.hooks: list[Callable[[], None]] = []
        self.cancelled = False
        self.heard = time.monotonic()  # when its receiving worker last said it waits for it

    def append(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)
        if self.cancelled:
            hook()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            for hook in self.hooks:
                hook()


class Owner:
    """The requests this worker serves for other workers, by (their worker's tag, number)."""

    def __init__(self, bus: Bus, handlers: dict, touch: Callable[[], None], ping: float
                 ) -> None:
        self.bus = bus
        self.tag = bus.tag
        self.handlers = handlers  # (path, method) -> a session request's handler
        self.touch = touch
        self.ping = ping
        self.served: dict[tuple[str, str], Served] = {}
        self.count = 0  # requests served

    def accept(self, header: dict, payload: bytes) -> None:
        """From the inbox reader: a ``call`` frame, served in a greenlet of its own."""
        if not well_formed(header):
            raise ValueError("a call frame without the fields it needs")
        greenlets.spawn(self.serve, header, payload, name="forwarded request")

    def cancel(self, header: dict) -> None:
        """From the inbox reader: the client of a call served here left."""
        served = self.served.get((header.get("f"), header.get("c")))
        if served is not None:
            served.cancel()

    def held(self, header: dict) -> None:
        """From the inbox reader: the calls a receiving worker still waits for."""
        now, sender = time.monotonic(), header.get("f")
        for corr in header.get("cs", ()):
            served = self.served.get((sender, corr))
            if served is not None:
                served.heard = now

    def serve(self, header: dict, payload: bytes) -> None:
        """Run another worker's request here; publish its answer back."""
        sender, corr = header["f"], header["c"]
        served = self.served[sender, corr] = Served(sender, corr)
        self.count += 1
        response = span = None
        publish = self.bus.publish_back  # again through a Redis blip: the request has run
        try:
            environ = _environ(header, self.bus.payload(header, payload), served)
            if tracing.on:  # the child of the receiving worker's span (frames.call_frame)
                span = self._span(environ)
            token = tracing.activate(span)
            try:
                response = self._run(environ)
            finally:
                tracing.deactivate(token)
            headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP]
            status = response.status_code
            if response.mimetype != "text/event-stream":
                if not publish(sender, {"k": "resp", "c": corr, "st": status, "h": headers},
                               b"".join(response.response), GRACE):
                    logger.warning("worker %s: worker %s is gone; its client's answer was "
                                   "dropped", self.tag, sender)
                return
            if not publish(sender, {"k": "head", "c": corr, "st": status, "h": headers}, b"",
                           GRACE):
                served.cancel()  # the receiving worker is gone: its client too
            for chunk in response.response:
                if served.cancelled or not publish(sender, {"k": "data", "c": corr}, chunk,
                                                   GRACE):
                    served.cancel()
                    break
            else:
                publish(sender, {"k": "end", "c": corr}, b"", GRACE)
        except BusError as exc:
            logger.warning("worker %s: a request forwarded by worker %s failed: %s", self.tag,
                           sender, exc)
            served.cancel()
        finally:
            if response is not None:
                response.close()  # a streaming Body's cleanup
            self.served.pop((sender, corr), None)
            if span is not None:
                status = 0 if response is None else response.status_code
                tracing.end_span(span, None if 0 < status < 500 else f"HTTP {status or 'none'}",
                                 {"http.response.status_code": status or None})

    def _span(self, environ: dict):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"][:200]
        return tracing.start_span(f"forwarded {method} {path}", tracing.context_from_headers(
            {"traceparent": environ.get("HTTP_TRACEPARENT"),
             "tracestate": environ.get("HTTP_TRACESTATE")}), "server",
            {"http.request.method": method, "url.path": path, "mcp.proxy.worker": self.tag,
             "mcp.proxy.forwarded_by": environ["mcp_proxy.forwarded"]})

    def _run(self, environ: dict) -> Response:
        handler = self.handlers.get((environ["PATH_INFO"], environ["REQUEST_METHOD"]))
        if handler is None:  # the receiving worker forwards only session requests
            return rpc_error(404, jsonrpc.INVALID_REQUEST, "Not Found")
        self.touch()
        try:
            return handler(environ)
        except ServerRemoved as exc:  # it raced the config reload that took its server out
            return server_removed(exc)
        except Exception:  # as Flask would: a 500, and the traceback in the log
            logger.exception("worker %s: a forwarded %s %s failed", self.tag,
                             environ["REQUEST_METHOD"], environ["PATH_INFO"])
            return rpc_error(500, jsonrpc.INTERNAL_ERROR, "Internal Server Error")

    def publish_alive(self, deaf: bool) -> None:
        """Each ping interval: end the calls no receiving worker waits for any more (unless
        this worker was ``deaf``: it could not have heard), and tell every receiving worker
        which of its calls are served here."""
        now = time.monotonic()
        forgotten = now - 3 * self.ping
        senders: dict[str, list[str]] = {}
        for served in list(self.served.values()):
            if deaf:
                served.heard = now
            elif served.heard < forgotten and not served.cancelled:
                logger.warning("worker %s: worker %s no longer waits for call %s; ending it",
                               self.tag, served.sender, served.corr)
                served.cancel()
                continue
            senders.setdefault(served.sender, []).append(served.corr)
        for sender, corrs in senders.items():
            self.bus.publish(sender, {"k": "alive", "f": self.tag, "cs": corrs})


def _environ(header: dict, body: bytes, served: Served) -> dict:
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
    if "sc" in header:  # the token's scopes, as checked where the request landed
        environ["mcp_proxy.scopes"] = frozenset(header["sc"])
    return environ
