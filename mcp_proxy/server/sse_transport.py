"""The HTTP+SSE transport (protocol 2024-11-05): ``GET /sse`` and ``POST /messages/``.

This module owns the SSE session (everything it sends goes down its one stream) and the two
routes; the POST delivers its message to the session and answers 202.

One event stream per session carries everything the child sends; the client POSTs each of
its messages and gets 202 once the message is on its way to the child. The session ends
with its stream.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, request, url_for

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import LinkClosed, ServerBusy, SpawnError, TooManySessions
from mcp_proxy.server.response_body import Body
from mcp_proxy.server.responses import (
    WholeResponse,
    event_stream,
    is_json,
    query_session,
    read_message,
    rpc_error,
    server_busy,
    text_error,
    too_large,
    too_many_sessions,
)
from mcp_proxy.server.sessions import TAGGED_ID, Registry, Session
from mcp_proxy.server.streams import Stream, sse_event

DISCOVER = "server/discover"
SSE_IS_2025 = ("Method not found: HTTP+SSE carries the 2025 era only; the 2026-07-28 era is "
               "served on Streamable HTTP (/mcp)")


class SseSession(Session):
    """A session whose every outgoing message goes down its one event stream."""

    transport = "sse"

    def __init__(self, registry: Registry, server_name: str) -> None:
        super().__init__(registry, server_name)
        self.stream = Stream(self)

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self.stream.send(message)

    def _on_close(self, reason: str) -> None:
        super()._on_close(reason)
        self.stream.end()
        self.stream.disown()


def add_sse_routes(bp: Blueprint, registry: Registry, server_name: str) -> None:
    keepalive = registry.settings.keepalive
    limit = registry.settings.max_body

    @bp.get("/sse")
    def sse() -> Response:
        try:
            session = registry.add(SseSession(registry, server_name))
            session.caller = registry.caller_of(request.environ)
            session.principal = registry.principal_of(request.environ)
        except TooManySessions as exc:
            return too_many_sessions(exc)
        endpoint = f"{url_for('.messages')}?session_id={session.id}".encode()

        def chunks():
            # headers leave only with the first chunk: send the endpoint at once
            yield sse_event(endpoint, b"endpoint")
            yield from session.stream.events(keepalive)

        def gone() -> None:
            registry.metrics.client_disconnected(session.transport)
            session.close("client closed its event stream")

        def ended() -> None:
            session.close("client disconnected")
            session.stream.discard()

        return event_stream(Body(chunks(), request.environ, session.stream, gone, ended))

    def post_message(environ: dict) -> Response:
        refused = too_large(environ, limit)
        if refused is not None:
            return refused
        if not is_json(environ):
            return text_error(400, "Invalid Content-Type header")
        session_id = query_session(environ.get("QUERY_STRING", ""))
        if not session_id:
            return text_error(400, "session_id is required")
        if not TAGGED_ID.match(session_id):
            try:
                session_id = uuid.UUID(session_id).hex
            except ValueError:
                return text_error(400, "Invalid session ID")
        session = registry.get(session_id, server_name, SseSession.transport, environ)
        if session is None:
            return text_error(404, "Could not find session")
        message = read_message(environ, limit)
        if isinstance(message, Response):
            return message
        gate = session.gate
        missing = None if gate is None else gate.check(message, environ.get("mcp_proxy.scopes"))
        try:
            if message.method == DISCOVER and message.kind == jsonrpc.REQUEST:
                # the 2026-07-28 era lives on Streamable HTTP only: an SDK in "auto" mode
                # probes, hears what a 2025-era server says, and falls back to initialize
                session.send(jsonrpc.error_message(message.id, -32601, SSE_IS_2025))
            elif missing:  # refused here, on the stream the answer would have taken
                session.send(gate.rules.refusal(environ, message, missing))
            else:
                session.deliver(message)
        except SpawnError as exc:
            session.close(str(exc))
            return rpc_error(502, jsonrpc.INTERNAL_ERROR, f"Could not start the MCP server: {exc}",
                             message.id if message.kind == jsonrpc.REQUEST else None)
        except ServerBusy as exc:
            return server_busy(exc, message)
        except LinkClosed:
            return text_error(404, "Could not find session")
        return WholeResponse("Accepted", status=202, mimetype="text/plain")

    @bp.post("/messages/")
    def messages() -> Response:
        return post_message(request._get_current_object().environ)

    registry.handlers[(bp.url_prefix or "") + "/messages/", "POST"] = post_message
