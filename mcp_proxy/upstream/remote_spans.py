"""RemoteSpans: the spans of one remote link, when traces are on (core/tracing.py).

A span (kind ``client``) per request the desktop client (or the fall-forward bridge) sends to
the remote, from the moment the link takes it until its answer goes back to the client: the
remote's answer, or the error the link makes itself (the remote lost, a POST that failed, the
link closed); a request stopped (a 2026-07-28 cancel) ends ``cancelled``. Its parent is the
context in the request's ``params._meta`` (``traceparent``, ``tracestate``), so the span joins
the desktop client's trace; the request that goes to the remote is a copy whose ``_meta``
names this span instead (everything else in it as the client sent it), and its POST carries
the same ``traceparent`` as a header (poster.py, from the span current while it posts).

A span per recovery, from the remote's loss to the re-initialized session or the link's end,
with the number of attempts. traced_remote.py wires these to the link; nothing here touches
a wire, and nothing is built when traces are off.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mcp_proxy.core import era_headers, jsonrpc, tracing
from mcp_proxy.core.call_spans import error_of, handed_on, outcome_of, start_call
from mcp_proxy.core.jsonrpc import Message, id_key


class RemoteSpans:
    """The open spans of one remote link's requests, and of its recovery."""

    def __init__(self, url: str, transport: str) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        self.link = {"url.full": tracing.bare_url(url), "server.address": parts.hostname,
                     "server.port": port, "mcp.proxy.transport": transport}
        self.open: dict[tuple, Any] = {}  # id_key -> the span of a request not answered yet
        self.recovery: Any = None
        self.attempts = 0

    # --- requests ---------------------------------------------------------------------------

    def start(self, message: Message) -> Message:
        """Open ``message``'s span; the copy of it to send on, its ``_meta`` naming the span."""
        era = "modern" if era_headers.is_modern_version(era_headers.version_of(message)) \
            else "legacy"
        span = start_call(self.open, message, tracing.context_from_meta(message.params),
                          "client", {**self.link, "mcp.proxy.era": era})
        return handed_on(message, span)  # positional params: the header still carries it

    def span_of(self, message: Message) -> Any:
        """The open span of a request (None for anything else)."""
        if message.kind != jsonrpc.REQUEST:
            return None
        return self.open.get(id_key(message.id))

    def answered(self, answer: Message, session: str | None) -> None:
        """An answer goes back to the client: its request's span ends."""
        span = self.open.pop(id_key(answer.id), None)
        if span is None:
            return
        code, error = error_of(answer)
        tracing.end_span(span, error, {"mcp.proxy.outcome": outcome_of(answer),
                                       "rpc.jsonrpc.error_code": code,
                                       "mcp.proxy.response.bytes": len(answer.raw),
                                       "mcp.session.id": session})

    def unanswered(self, request_id: Any, said: str, error: str) -> None:
        """A request that gets no answer through the link (stopped, or sent elsewhere)."""
        span = self.open.pop(id_key(request_id), None)
        tracing.end_span(span, error, {"mcp.proxy.outcome": said})

    # --- recovery ---------------------------------------------------------------------------

    def lost(self, reason: str) -> None:
        if self.recovery is None:
            self.attempts = 0
            self.recovery = tracing.start_span("mcp-proxy recovery", None, "internal", {
                **self.link, "mcp.proxy.recovery.reason": reason[:200]})

    def recovered(self, error: str | None) -> None:
        """The recovery is over: the session is back (``error`` None), or the link ends."""
        span, self.recovery = self.recovery, None
        tracing.end_span(span, error, {"mcp.proxy.recovery.attempts": self.attempts,
                                       "mcp.proxy.outcome": "error" if error else "ok"})

    # --- the end -----------------------------------------------------------------------------

    def closed(self, reason: str) -> None:
        """The link closed: every span still open ends, with ``reason`` as its error."""
        spans, self.open = self.open, {}
        for span in spans.values():
            tracing.end_span(span, f"no answer: {reason}"[:200], {"mcp.proxy.outcome": "no answer"})
        if self.recovery is not None:
            self.recovered(f"the link closed: {reason}"[:200])
