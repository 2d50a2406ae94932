"""Links and the bridge that joins two of them.

A link is one end of a transport: ``send()`` gives it a message for its peer, iterating it
yields what its peer sent, ``close()`` ends it and ``closed`` tells everyone it ended and
why. ``bridge(down, up)`` pumps both ways until either side closes, then closes the other
and answers every request still in flight with a JSON-RPC error, so nobody waits forever.

The bridge never answers, drops or rewrites a message on its own account: it relays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import gevent
from gevent.event import Event
from gevent.queue import Queue

from mcp_proxy import jsonrpc
from mcp_proxy.errors import LinkClosed
from mcp_proxy.jsonrpc import Message

logger = logging.getLogger(__name__)

_END = object()


class Link:
    """Base class: an inbox of messages from the peer, plus close bookkeeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = Event()
        self.close_reason = ""
        self._inbox: Queue = Queue()

    def send(self, message: Message) -> None:
        """Deliver ``message`` to the peer; raise :class:`LinkClosed` once closed."""
        raise NotImplementedError

    def deliver(self, message: Message) -> None:
        """Queue a message received from the peer, for whoever iterates this link."""
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self._inbox.put(message)

    def __iter__(self) -> Iterator[Message]:
        while True:
            item = self._inbox.get()
            if item is _END:
                return
            yield item

    def close(self, reason: str = "closed") -> None:
        """End the link once; later calls are ignored. Messages already received still drain."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._inbox.put(_END)
        try:
            self._on_close(reason)
        except Exception:  # a failing cleanup must not stop the other side closing
            logger.exception("%s: error while closing", self.name)

    def _on_close(self, reason: str) -> None:
        """Subclasses release their resources here."""


def _answer_pending(link: Link, pending: dict, reason: str) -> None:
    for request_id in list(pending.values()):
        try:
            link.send(jsonrpc.error_message(
                request_id, jsonrpc.CONNECTION_CLOSED, f"MCP server connection closed: {reason}"))
        except LinkClosed:
            return
    pending.clear()


def _pump(source: Link, target: Link, sent: dict, answered: dict) -> None:
    """Move messages source -> target; track requests in ``sent``, answers in ``answered``."""
    for message in source:
        kind = message.kind
        if kind == jsonrpc.REQUEST:
            sent[jsonrpc.id_key(message.id)] = message.id
        elif kind == jsonrpc.RESPONSE:
            answered.pop(jsonrpc.id_key(message.id), None)
        elif message.method == "notifications/cancelled":
            answered_id = message.params.get("requestId")
            sent.pop(jsonrpc.id_key(answered_id), None)
        try:
            target.send(message)
        except LinkClosed:
            if kind == jsonrpc.REQUEST:
                sent.pop(jsonrpc.id_key(message.id), None)
                _reply_closed(source, message, target.close_reason)
            else:
                logger.warning("%s closed; dropped %r", target.name, message)


def _reply_closed(source: Link, message: Message, reason: str) -> None:
    try:
        source.send(jsonrpc.error_message(
            message.id, jsonrpc.CONNECTION_CLOSED, f"MCP server connection closed: {reason}"))
    except LinkClosed:
        pass


def bridge(down: Link, up: Link) -> gevent.Greenlet:
    """Relay between ``down`` (the client side) and ``up`` (the server side).

    Returns a greenlet that finishes when both directions have stopped. Requests the client
    sent that are unanswered when ``up`` closes get a JSON-RPC error on ``down``.
    """
    client_requests: dict = {}  # sent down -> up, awaiting an answer from up
    server_requests: dict = {}  # sent up -> down, awaiting an answer from down

    def downward() -> None:
        try:
            _pump(up, down, server_requests, client_requests)
        finally:
            _answer_pending(down, client_requests, up.close_reason or "upstream ended")
            down.close(up.close_reason or "upstream ended")

    def upward() -> None:
        try:
            _pump(down, up, client_requests, server_requests)
        finally:
            up.close(down.close_reason or "client ended")

    def run() -> None:
        workers = [gevent.spawn(downward), gevent.spawn(upward)]
        try:
            gevent.joinall(workers, raise_error=True)
        except Exception:
            logger.exception("bridge %s <-> %s failed", down.name, up.name)
            up.close("proxy error")
            down.close("proxy error")
            gevent.killall(workers)

    return gevent.spawn(run)
