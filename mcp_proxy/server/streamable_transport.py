"""The Streamable HTTP transport (2025-03-26 and later, legacy sessions): ``/mcp``.

Each POSTed request gets its own stream; routing decides where each message from the child
goes: a response to the stream of its request, progress to the stream that owns its token,
a log line to an open request's stream, anything else to the GET stream if one is open, else
to an open request's stream, else to a backlog that the next GET stream drains. A request
is answered as plain JSON when its response is the first thing the child sends for it, and
as an event stream otherwise (progress, sampling, elicitation before the answer).
"""

from __future__ import annotations

import logging
import time

import gevent
from flask import Blueprint, Response, request

from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.protocol import LEGACY_VERSIONS
from mcp_proxy.errors import LinkClosed, TooManySessions
from mcp_proxy.server.era import is_modern, no_modern_streams
from mcp_proxy.server.relay import Relay
from mcp_proxy.server.responses import (
    accepts,
    event_stream,
    is_json,
    read_message,
    rpc_error,
    too_large,
    too_many_sessions,
)
from mcp_proxy.server.sessions import Registry, Session
from mcp_proxy.server.streams import PING, Body, Stream

logger = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
SESSION_KEY = "HTTP_MCP_SESSION_ID"  # the header, as the WSGI environ names it
# A client whose GET stream closed and who has no request open is gone unless it reopens
# the stream within this many seconds (clients that lose a stream reconnect at once).
REOPEN_GRACE = 1.0


class StreamableSession(Session):
    """A session whose messages are routed over per-request streams and one GET stream."""

    transport = "streamable"

    def __init__(self, registry: Registry, server_name: str) -> None:
        super().__init__(registry, server_name)
        self.requests: dict[tuple, Stream] = {}  # open client requests, oldest first
        self.progress: dict[tuple, tuple] = {}  # progress token -> request key
        self.unsolicited = Stream(self, reading=False)  # the GET stream's queue and backlog
        self.get_open = False
        self.idle_limit = self.settings.session_idle_timeout

    def open_request(self, message: Message) -> Stream | None:
        """Register a stream for a client request; None if its id is already in flight."""
        key = id_key(message.id)
        if key in self.requests:
            return None
        stream = self.requests[key] = Stream(self)
        meta = message.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            self.progress[id_key(token)] = key
        return stream

    def release(self, key: tuple) -> None:
        """Stop routing to a request's stream (answered, cancelled, or its client left)."""
        stream = self.requests.pop(key, None)
        if stream is not None:
            stream.end()
            for token, owner in list(self.progress.items()):
                if owner == key:
                    del self.progress[token]

    def receive(self, message: Message) -> None:
        self.idle_limit = self.settings.session_idle_timeout
        super().receive(message)
        if message.method == "notifications/cancelled":
            key = id_key(message.params.get("requestId"))
            stream = self.requests.get(key)
            if stream is not None:
                # the child may never answer now; end the POST stream as the SDK does
                stream.put(jsonrpc.error_message(
                    message.params["requestId"], jsonrpc.REQUEST_CANCELLED, "Request cancelled"))
                self.release(key)

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self.last_activity = time.monotonic()
        if message.kind == jsonrpc.RESPONSE:
            key = id_key(message.id)
            stream = self.requests.get(key)
            if stream is None:
                logger.info("%s: no open request %r (cancelled, or its client left); "
                            "dropped the server's answer", self.name, message.id)
                return
            stream.put(message)
            self.release(key)
            return
        self._route(message).put(message)

    def _route(self, message: Message) -> Stream:
        if message.method == "notifications/progress":
            token = message.params.get("progressToken")
            owner = self.requests.get(self.progress.get(id_key(token)))
            if owner is not None:
                return owner
        oldest = next(iter(self.requests.values()), None)
        if message.method == "notifications/message" and oldest is not None:
            return oldest
        if self.get_open or oldest is None:
            return self.unsolicited
        return oldest

    def idle(self, now: float) -> float:
        if self.get_open or self.requests:
            return 0.0
        return now - self.last_activity

    def get_closed(self) -> None:
        """The GET stream ended: a client that shows no sign of life soon after has left."""
        self.get_open = False
        self.unsolicited.detach_reader()
        if self.closed.is_set():
            return
        self.last_activity = stamp = time.monotonic()
        self.idle_limit = REOPEN_GRACE
        greenlets.spawn(self._end_if_gone, stamp, name=f"{self.name} reopen grace")

    def _end_if_gone(self, stamp: float) -> None:
        gevent.sleep(REOPEN_GRACE)
        if not self.get_open and not self.requests and self.last_activity == stamp:
            self.close(f"client closed its GET stream and did not reopen it within "
                       f"{REOPEN_GRACE:g} s")

    def _on_close(self, reason: str) -> None:
        super()._on_close(reason)
        for key in list(self.requests):
            self.release(key)
        self.unsolicited.end()


def add_streamable_routes(bp: Blueprint, registry: Registry, server_name: str) -> None:
    keepalive = registry.settings.keepalive
    limit = registry.settings.max_body
    stateless = registry.settings.stateless
    relay = Relay(registry, server_name, keepalive)

    def no_sessions() -> Response:
        return rpc_error(405, jsonrpc.INVALID_REQUEST, "Method Not Allowed: this server is "
                         "stateless (no sessions, no GET stream)", Allow="POST, OPTIONS")

    def find_session(environ: dict) -> StreamableSession | Response:
        session_id = environ.get(SESSION_KEY)
        if not session_id:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "Bad Request: Missing session ID")
        session = registry.get(session_id, server_name, StreamableSession.transport)
        if session is None:
            return rpc_error(404, jsonrpc.INVALID_REQUEST, "Session not found")
        return session

    def post(environ: dict) -> Response:
        refused = too_large(environ, limit)
        if refused is not None:
            return refused
        if accepts(environ) != (True, True):
            return rpc_error(406, jsonrpc.INVALID_REQUEST, "Not Acceptable: Client must accept "
                             "both application/json and text/event-stream")
        if not is_json(environ):
            return rpc_error(415, jsonrpc.INVALID_REQUEST,
                             "Unsupported Media Type: Content-Type must be application/json")
        message = read_message(environ, limit)
        if isinstance(message, Response):
            return message
        if not environ.get(SESSION_KEY) and message.method != "initialize" \
                and is_modern(environ, message):
            return relay.modern(message, environ)
        version = environ.get("HTTP_MCP_PROTOCOL_VERSION")
        if version is not None and version not in LEGACY_VERSIONS:
            return rpc_error(400, jsonrpc.INVALID_REQUEST,
                             f"Bad Request: Unsupported protocol version: {version}; supported: "
                             f"{', '.join(sorted(LEGACY_VERSIONS))}")
        if stateless:  # each POST stands alone, on a port of the shared server
            session = StreamableSession(registry, server_name)
            session.ephemeral = True
            response = relay.answer(session, message, {}, environ, ephemeral=True)
            if response.mimetype != "text/event-stream":
                session.close("stateless request done")
            return response
        if environ.get(SESSION_KEY) or message.method != "initialize":
            session = find_session(environ)
            if isinstance(session, Response):
                return session
        else:
            try:
                session = registry.add(StreamableSession(registry, server_name))
            except TooManySessions as exc:
                return too_many_sessions(exc)
        return relay.answer(session, message, {SESSION_HEADER: session.id}, environ,
                            ephemeral=False)

    def get(environ: dict) -> Response:
        if is_modern(environ):
            return no_modern_streams()
        if stateless:
            return no_sessions()
        if not accepts(environ)[1]:
            return rpc_error(406, jsonrpc.INVALID_REQUEST,
                             "Not Acceptable: Client must accept text/event-stream")
        session = find_session(environ)
        if isinstance(session, Response):
            return session
        if session.get_open:
            return rpc_error(409, jsonrpc.INVALID_REQUEST,
                             "Conflict: Only one SSE stream is allowed per session")
        session.get_open = True
        session.idle_limit = registry.settings.session_idle_timeout
        backlog = session.unsolicited
        backlog.attach_reader()

        def chunks():
            yield PING  # headers leave with the first chunk
            yield from backlog.events(keepalive)

        def gone() -> None:
            logger.info("%s: client closed its GET stream", session.name)
            registry.metrics.client_disconnected(session.transport)
            backlog.wake()

        body = Body(chunks(), environ, backlog, gone, session.get_closed)
        return event_stream(body, **{SESSION_HEADER: session.id})

    def delete(environ: dict) -> Response:
        if is_modern(environ):
            return no_modern_streams()
        if stateless:
            return no_sessions()
        session = find_session(environ)
        if isinstance(session, Response):
            return session
        session.close("client ended the session")
        return Response(status=200)

    # the Flask views, and the same handlers by path for requests forwarded by other workers
    prefix = bp.url_prefix or ""
    for method, handler in (("POST", post), ("GET", get), ("DELETE", delete)):
        view = _view(handler)
        for path in ("/mcp", "/mcp/"):
            bp.add_url_rule(path, f"mcp_{method.lower()}", view, methods=[method])
            registry.handlers[prefix + path, method] = handler


def _view(handler):
    return lambda: handler(request._get_current_object().environ)
