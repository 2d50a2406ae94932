"""A span per JSON-RPC request relayed to a server, from its request to its answer.

With traces on (core/tracing.py), ``Metrics.relay_meter`` (metrics.py) wraps each bridge's
meter in a :class:`TracedMeter`: it sees every message both ways on every server-mode path
(a session's own child, a port of a shared child, a 2026-07-28 request's port), so it opens
a span when a request goes to the server and ends it when the answer comes back on its way
to the client, or when the request is cancelled or its session, port or child ends first
(then with an error status: a span is always ended). Off, nothing here is built.

A request's span is the child of the trace context in its ``params._meta`` (``traceparent``,
``tracestate``) if it has one, else of the current span: the HTTP request's (http_spans.py),
or on an owning worker the forwarded call's (scaleout/owner.py). :meth:`TracedMeter.hand_on`
gives the copy of a request the server gets: its ``_meta`` names this span, so the server's
own spans join the trace. The client's message, ids and bytes are never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_proxy.core import jsonrpc, tracing
from mcp_proxy.core.call_spans import error_of, handed_on, outcome_of, start_call
from mcp_proxy.core.jsonrpc import Message, id_key


class TracedMeter:
    """A relay meter (metrics.py's, or the audit's) that also traces each request."""

    __slots__ = ("inner", "server", "session", "transport", "era", "_open")

    def __init__(self, inner: Any, server: str) -> None:
        self.inner = inner
        self.server = server
        self.session: str | None = None
        self.transport = self.era = None
        self._open: dict = {}  # id_key -> the span of a request not answered yet

    def watch(self, link, session: str | None, caller: str) -> None:
        self.inner.watch(link, session, caller)
        self.session = session
        modern = link.transport == "modern"
        self.transport = "streamable" if modern else link.transport
        self.era = "modern" if modern else "legacy"
        link.ended.rawlink(lambda _: self.unanswered(link.close_reason or "session ended"))

    def client_to_server(self, message: Message) -> None:
        self.inner.client_to_server(message)
        kind = message.kind
        if kind == jsonrpc.REQUEST:
            self._start(message)
        elif kind == jsonrpc.NOTIFICATION and self._open \
                and message.method == "notifications/cancelled":
            self._end(id_key(message.params.get("requestId")), "cancelled", None, 0,
                      "cancelled by the client")

    def _start(self, message: Message) -> None:
        parent = tracing.context_from_meta(message.params)
        kind = "internal" if parent is None else "server"  # under our HTTP span, or the client's
        start_call(self._open, message, parent, kind, {
            "mcp.session.id": self.session, "mcp.proxy.server": self.server,
            "mcp.proxy.transport": self.transport, "mcp.proxy.era": self.era})

    def hand_on(self, message: Message) -> Message:
        """The copy of ``message`` the server gets: a request's ``_meta`` names its span."""
        if message.kind != jsonrpc.REQUEST:
            return message
        span = self._open.get(id_key(message.id))
        return message if span is None else handed_on(message, span)

    def wrap_send(self, send: Callable[[Message], None]) -> Callable[[Message], None]:
        """``send`` of the server's link, handing on each request's context (core/link.py)."""
        hand_on = self.hand_on
        return lambda message: send(hand_on(message))

    def server_to_client(self, message: Message) -> None:
        span = None
        if message.kind == jsonrpc.RESPONSE and self._open:
            span = self._open.get(id_key(message.id))
        token = tracing.activate(span)  # an audit line of the call carries its ids
        try:
            self.inner.server_to_client(message)
        finally:
            tracing.deactivate(token)
        if span is not None:
            code, error = error_of(message)
            self._end(id_key(message.id), outcome_of(message), code, len(message.raw), error)

    def _end(self, key, outcome: str, code: Any, bytes_out: int, error: str | None) -> None:
        span = self._open.pop(key, None)
        if span is not None:
            tracing.end_span(span, error, {
                "mcp.proxy.outcome": outcome, "mcp.proxy.response.bytes": bytes_out,
                "rpc.jsonrpc.error_code": code})

    def unanswered(self, reason: str) -> None:
        """The link ended: every request still open had no answer."""
        spans, self._open = self._open, {}
        for span in spans.values():
            tracing.end_span(span, f"no answer: {reason}", {"mcp.proxy.outcome": "no answer"})
