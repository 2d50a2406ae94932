"""A message POSTed to ``/mcp``, delivered to its session and answered: 202, JSON or a stream.

This module owns what a POST to ``/mcp`` becomes once the routes (streamable_transport.py)
checked it: the 202, the JSON answer or the event stream, and the 2026-07-28 era's requests.
It never routes a message between streams (streamable_session.py does) and never rewrites one.

:meth:`Relay.answer` delivers a message to its 2025-era session. A request is answered as
JSON when its response is the first thing the server sends for it, else as an event stream
(a request's own stream, ended after its response). :meth:`Relay.modern` is the 2026-07-28
entry: the request is checked against its headers, then relayed through a port of its own
(request_port.py) to the server's modern lane (or, when the server is legacy-only, to the
legacy session its bridge picks: children/legacy_bridge.py), and answered the same way;
closing its stream (or leaving before the first byte) closes that port, which cancels the
request on the child at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Response

from mcp_proxy.children.request_state import principal
from mcp_proxy.core import jsonrpc, tracing
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.protocol import VERSION_KEY
from mcp_proxy.errors import LegacyOnly, LinkClosed, ProxyError, ServerBusy, SpawnError, StreamEnded
from mcp_proxy.server import era
from mcp_proxy.server.caller import caller_of
from mcp_proxy.server.request_port import RequestPort
from mcp_proxy.server.response_body import Body
from mcp_proxy.server.responses import WholeResponse, event_stream, rpc_error, server_busy
from mcp_proxy.server.scaleout.frames import auth_digest
from mcp_proxy.server.streams import PING, Stream, sse_event
from mcp_proxy.server.tool_scopes import INSUFFICIENT_SCOPE, ScopeGate, ToolScopes

if TYPE_CHECKING:
    from mcp_proxy.server.sessions import Registry
    from mcp_proxy.server.streamable_session import StreamableSession

logger = logging.getLogger(__name__)

_PROMPT = 0.02  # a modern answer that takes longer gets its caller's socket watched


class Relay:
    """The POST /mcp answer of one configured server."""

    def __init__(self, registry: Registry, server_name: str, keepalive: float) -> None:
        self.registry = registry
        self.server_name = server_name
        self.keepalive = keepalive

    def _events(self, stream: Stream, first: list):
        message = first[0]
        yield PING if message is None else sse_event(message.raw)
        if message is None or message.kind != jsonrpc.RESPONSE:
            yield from stream.events(self.keepalive, until_response=True)

    def _body(self, session: StreamableSession, message: Message, stream: Stream,
              first: list, ephemeral: bool, environ: dict) -> Body:
        key = id_key(message.id)

        def gone() -> None:
            logger.info("%s: client closed the stream of request %r", session.name, message.id,
                        extra=session.context())
            self.registry.metrics.client_disconnected(session.transport)
            if ephemeral:  # --stateless: the request's own session, which nobody else reads
                session.close("client closed the request's stream")
            else:  # not a cancel (2025 era): the late answer is dropped
                session.release(key)

        def ended() -> None:
            session.release(key)
            stream.discard()
            if ephemeral:
                session.close("request done")

        return Body(self._events(stream, first), environ, stream, gone, ended)

    def answer(self, session: StreamableSession, message: Message, headers: dict,
               environ: dict, ephemeral: bool) -> Response:
        """Hand the message to the session; the answer: 202, JSON, or an event stream."""
        gate = session.gate
        if gate is not None:
            missing = gate.check(message, environ.get("mcp_proxy.scopes"))
            if missing:  # refused here: the server never sees it
                return _forbidden(gate.rules, environ, message, missing)
        stream = None
        if message.kind == jsonrpc.REQUEST:
            stream = session.open_request(message)
            if stream is None:
                return rpc_error(400, jsonrpc.INVALID_REQUEST,
                                 f"Bad Request: request id {message.id!r} is already in flight")
        try:
            session.deliver(message)
        except SpawnError as exc:
            session.close(str(exc))
            return rpc_error(502, jsonrpc.INTERNAL_ERROR,
                             f"Could not start the MCP server: {exc}", message.id)
        except ServerBusy as exc:
            if stream is not None:
                session.release(id_key(message.id))
            return server_busy(exc, message)
        except LinkClosed:
            return rpc_error(404, jsonrpc.INVALID_REQUEST, "Session not found")
        if stream is None:
            return WholeResponse(b"", status=202, headers=headers)

        return self._respond(session, stream, message, headers, False,
                             lambda first: self._body(session, message, stream, first,
                                                      ephemeral, environ))

    def _respond(self, owner, stream: Stream, message: Message, headers: dict, modern: bool,
                 body_for) -> Response:
        """Wait for the first message: JSON if it is the answer, else an event stream."""
        first: list = [None]
        body = None
        try:
            if modern:  # a caller that leaves before the first byte cancels too
                first[0] = stream.read(_PROMPT)  # most answers come at once: no watch needed
                if first[0] is None:
                    body = body_for(first)
            if first[0] is None:
                first[0] = stream.read(self.keepalive)
        except StreamEnded:
            if body is not None:
                body.close()
            return rpc_error(503, jsonrpc.CONNECTION_CLOSED,
                             f"Session closed: {owner.close_reason}", message.id)
        if first[0] is not None and first[0].kind == jsonrpc.RESPONSE:
            if body is not None:
                body.close()
            status = era.json_status(first[0]) if modern else 200
            return WholeResponse(first[0].raw, status=status, mimetype="application/json",
                                 headers=headers)
        return event_stream(body or body_for(first), **headers)

    def modern(self, message: Message, environ: dict) -> Response:
        """A 2026-07-28 POST: checked here, then relayed to the modern lane on its own."""
        if message.kind != jsonrpc.REQUEST:
            return WholeResponse(b"", status=202)  # this era has no client notifications over HTTP
        refused = era.check_headers(environ, message)
        if refused is not None:
            return refused
        rules = self.registry.tool_scopes.get(self.server_name)
        gate = None
        if rules is not None:
            gate = ScopeGate(rules)
            missing = gate.check(message, environ.get("mcp_proxy.scopes"))
            if missing:
                return _forbidden(rules, environ, message, missing)
        router = self.registry.router
        if router is not None and b'"requestState"' in message.raw:
            owner = router.owner_of_handle(message.params.get("requestState"), environ)
            if owner is not None:  # a retry goes back to the child that sealed its handle
                response = router.forwarder.forward(environ, owner, 0, body=message.raw)
                if response is not None:
                    return response
        caller = principal(auth_digest(environ))
        supervisor = self.registry.supervisor
        try:
            try:
                lane = supervisor.modern(self.server_name)
                lane.ensure_started()
            except LegacyOnly:  # carried on a 2025-era session of the proxy's own
                if not supervisor.bridgeable(self.server_name):  # combined, or remote
                    return era.legacy_only(message, message.params["_meta"][VERSION_KEY])
                lane = supervisor.bridge(self.server_name).session_for(
                    caller, message.params.get("_meta"), message.request_state)
                lane.ensure_started()
        except SpawnError as exc:
            return rpc_error(502, jsonrpc.INTERNAL_ERROR,
                             f"Could not start the MCP server: {exc}", message.id)
        except ServerBusy as exc:
            return server_busy(exc, message)
        if message.method == "tools/call":
            params = message.params
            name, meta = params.get("name"), params.get("_meta")
            try:
                headers = lane.tool_headers(name, meta)
            except ProxyError as exc:  # unchecked, it must not reach the child
                return rpc_error(502, jsonrpc.INTERNAL_ERROR, f"Cannot check the Mcp-Param-* "
                                 f"headers of tool {name!r}: {exc}", message.id)
            refused = era.check_params(environ, message, headers)
            if refused is not None:
                return refused
        port = RequestPort(lane, self.registry, message, caller)
        if gate is not None:
            port.deliver = gate.gated(port.deliver)
        port.peer = caller_of(environ, True) if self.registry.settings.auth_required else \
            environ.get("REMOTE_ADDR") or "?"  # for a refused requestState's log line
        port.meter = meter = self.registry.metrics.relay_meter(self.server_name)
        meter.watch(port, None, self.registry.caller_of(environ))
        meter.client_to_server(message)
        try:  # with traces on, the copy the server gets names the request's span
            lane.route(port, meter.hand_on(message) if tracing.on else message)
        except ServerBusy as exc:
            port.close("the server is busy")
            return server_busy(exc, message)
        response = self._respond(port, port.stream, message, {}, True,
                                 lambda first: self._modern_body(port, message, first, environ))
        if isinstance(response, WholeResponse):  # not an event stream: answered whole
            port.close("request done")
        return response

    def _modern_body(self, port: RequestPort, message: Message, first: list,
                     environ: dict) -> Body:
        """The event stream of a modern request's answer (most are answered whole)."""
        stream = port.stream

        def gone() -> None:
            logger.info("%s: client closed the stream of request %r", port.name, message.id)
            self.registry.metrics.client_disconnected(port.transport)
            port.close("client closed the request's stream")  # a cancel, in this era

        def ended() -> None:
            stream.discard()
            port.close("request done")

        return Body(self._events(stream, first), environ, stream, gone, ended)


def _forbidden(rules: ToolScopes, environ: dict, message: Message,
               missing: frozenset[str]) -> Response:
    """403 for a tools/call whose tool needs a scope the caller's token lacks."""
    text, challenge = rules.challenge(environ, message, missing)
    return rpc_error(403, INSUFFICIENT_SCOPE, text, message.id,
                     **{"WWW-Authenticate": challenge})
