"""The Streamable HTTP transport (2025-03-26 and later): the routes of ``/mcp``.

This module owns the HTTP side of ``/mcp``: the checks of a POST, GET and DELETE, finding or
opening the session (streamable_session.py routes its messages), and the GET stream. What a
POST becomes (202, JSON or an event stream; the 2026-07-28 era's requests) is the relay's
(relay.py), which app.py hands over: the relay sits above the sessions it drives, so the
routes depend only on :class:`Relaying`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from flask import Blueprint, Response, request

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import LEGACY_VERSIONS
from mcp_proxy.errors import TooManySessions
from mcp_proxy.server.era import is_modern, no_modern_streams
from mcp_proxy.server.response_body import Body
from mcp_proxy.server.responses import (
    WholeResponse,
    accepts,
    event_stream,
    is_json,
    read_message,
    rpc_error,
    too_large,
    too_many_sessions,
)
from mcp_proxy.server.sessions import Registry
from mcp_proxy.server.streamable_session import StreamableSession
from mcp_proxy.server.streams import PING

logger = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
SESSION_KEY = "HTTP_MCP_SESSION_ID"  # the header, as the WSGI environ names it


class Relaying(Protocol):
    """What the routes ask of the relay (relay.py's ``Relay``) for one POST."""

    def answer(self, session: StreamableSession, message: Message, headers: dict,
               environ: dict, ephemeral: bool) -> Response: ...

    def modern(self, message: Message, environ: dict) -> Response: ...


def add_streamable_routes(bp: Blueprint, registry: Registry, server_name: str,
                          relay: Relaying) -> None:
    keepalive = registry.settings.keepalive
    limit = registry.settings.max_body
    stateless = registry.settings.stateless

    def no_sessions() -> Response:
        return rpc_error(405, jsonrpc.INVALID_REQUEST, "Method Not Allowed: this server is "
                         "stateless (no sessions, no GET stream)", Allow="POST, OPTIONS")

    def find_session(environ: dict) -> StreamableSession | Response:
        session_id = environ.get(SESSION_KEY)
        if not session_id:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "Bad Request: Missing session ID")
        session = registry.get(session_id, server_name, StreamableSession.transport, environ)
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
            session.ephemeral, session.caller = True, registry.caller_of(environ)
            response = relay.answer(session, message, {}, environ, ephemeral=True)
            if isinstance(response, WholeResponse):  # not an event stream: answered whole
                session.close("stateless request done")
            return response
        if environ.get(SESSION_KEY) or message.method != "initialize":
            session = find_session(environ)
            if isinstance(session, Response):
                return session
        else:
            try:
                session = registry.add(StreamableSession(registry, server_name))
                session.caller = registry.caller_of(environ)
                session.principal = registry.principal_of(environ)
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
            logger.info("%s: client closed its GET stream", session.name,
                        extra=session.context())
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
