"""The remote links with traces: the SSE and Streamable HTTP links, each request and each
recovery in a span (remote_spans.py).

:func:`remote_class` picks these only when traces are on (core/tracing.py), so the links
themselves hold no tracing code and a run without traces pays nothing per message. ``Traced``
hooks the steps of a request through the link: ``send`` opens its span and sends on the copy
whose ``_meta`` names it; the greenlet that posts it makes the span current (the POST's
``traceparent`` header, and the spans of a sign-in the POST starts, are its children); the
answer that goes back to the client ends it, and so does a stop or the link's end. The loss
of the remote opens a recovery span, current in the recovery's greenlet, ended when the
session is back or the link ends.
"""

from __future__ import annotations

from typing import Any

from gevent import GreenletExit

from mcp_proxy.core import jsonrpc, tracing
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import FallbackNeeded
from mcp_proxy.upstream.remote_link import Upstream
from mcp_proxy.upstream.remote_spans import RemoteSpans
from mcp_proxy.upstream.sse_remote import SseUpstream
from mcp_proxy.upstream.streamable_remote import StreamableUpstream

CANCELLED = "cancelled by the client"


class Traced:
    """Mixed in before a remote link class (see the module docstring)."""

    transport = "?"

    def __init__(self, settings, http, *args: Any, **kwargs: Any) -> None:
        super().__init__(settings, http, *args, **kwargs)  # type: ignore[call-arg]
        self.spans = RemoteSpans(settings.url, self.transport)

    def send(self, message: Message, here: bool = False) -> None:
        if message.kind != jsonrpc.REQUEST or self.closed.is_set():
            if message.method == "notifications/cancelled":  # an answer may still come: late
                self.spans.unanswered(message.params.get("requestId"), "cancelled", CANCELLED)
            super().send(message)
            return
        traced = self.spans.start(message)
        try:
            super().send(traced, here)
        except GreenletExit:  # posted here (``here``), and its driver stopped: a cancel
            self.spans.unanswered(message.id, "cancelled", CANCELLED)
            raise
        except BaseException:
            self.spans.unanswered(message.id, "not sent", "the link refused it")
            raise
        if message.method == "initialize":
            self.initialize = message  # what a recovery replays: the client's own

    def send_first(self, message: Message) -> None:
        if message.kind != jsonrpc.REQUEST:
            super().send_first(message)
            return
        traced = self.spans.start(message)
        token = tracing.activate(self.spans.span_of(traced))
        try:
            super().send_first(traced)
        except FallbackNeeded:
            self.spans.unanswered(message.id, "fallback", None)  # sent again, over SSE
            raise
        finally:
            tracing.deactivate(token)
        if message.method == "initialize":
            self.initialize = message

    def _send_now(self, message: Message) -> None:
        token = tracing.activate(self.spans.span_of(message))
        try:
            super()._send_now(message)
        finally:
            tracing.deactivate(token)

    def _deliver_unless_closed(self, message: Message) -> None:
        try:
            super()._deliver_unless_closed(message)
        finally:
            if message.kind == jsonrpc.RESPONSE:
                self.spans.answered(message, getattr(self, "session_id", None))

    def stop_request(self, request_id: Any) -> bool:
        stopped = super().stop_request(request_id)
        self.spans.unanswered(request_id, "cancelled", CANCELLED)
        return stopped

    def lost(self, reason: str) -> None:
        if not self.closed.is_set() and not self.recovering:
            self.spans.lost(reason)
        super().lost(reason)

    def _reset(self) -> None:
        self.spans.attempts += 1  # each attempt of a recovery starts here
        super()._reset()

    def _recover(self) -> None:
        token = tracing.activate(self.spans.recovery)
        try:
            super()._recover()
        finally:
            tracing.deactivate(token)
            self.spans.recovered(self.close_reason or "the recovery ended"
                                 if self.closed.is_set() else None)

    def _on_close(self, reason: str) -> None:
        try:
            super()._on_close(reason)
        finally:
            self.spans.closed(reason)


class TracedSseUpstream(Traced, SseUpstream):
    transport = "sse"


class TracedStreamableUpstream(Traced, StreamableUpstream):
    transport = "streamable"


def remote_class(transport: str) -> type[Upstream]:
    """The link class for ``transport`` (``sse``, else Streamable HTTP): traced when traces
    are on."""
    if transport == "sse":
        return TracedSseUpstream if tracing.on else SseUpstream
    return TracedStreamableUpstream if tracing.on else StreamableUpstream
