"""Links and the bridge that joins two of them.

A link is one end of a transport: ``send()`` gives it a message for its peer, iterating it
yields what its peer sent, ``close()`` ends it and ``closed`` tells everyone it ended and
why. ``bridge(down, up)`` relays both ways until either side closes, then closes the other
and answers every request still in flight with a JSON-RPC error, so nobody waits forever.

The bridge never answers, drops or rewrites a message on its own account: it relays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from gevent.event import Event
from gevent.queue import Queue

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import LinkClosed, ServerBusy

logger = logging.getLogger(__name__)

_END = object()
_ALWAYS_READY = Event()
_ALWAYS_READY.set()


class Link:
    """Base class: what the peer sends goes to the bridge (or an inbox), plus close bookkeeping.

    Backpressure: ``ready`` is clear while a link holds too much it could not pass on yet (a
    client that does not read); a link that reads from a producer (a child's stdout) waits on
    ``peer_ready``, its peer's ``ready``, before reading more.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = _ALWAYS_READY
        self.peer_ready = _ALWAYS_READY
        self.closed = Event()  # set as closing starts
        self.ended = Event()  # set once closing is done: resources released, peer told
        self.close_reason = ""
        self._inbox: Queue | None = None  # made when a message waits for a bridge or reader
        self._sink: Callable[[Message], None] | None = None
        self._on_end: Callable[[], None] | None = None

    def send(self, message: Message) -> None:
        """Deliver ``message`` to the peer; raise :class:`LinkClosed` once closed."""
        raise NotImplementedError

    def deliver(self, message: Message) -> None:
        """Hand on a message received from the peer: to the bridge at once, else to the inbox."""
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        if self._sink is not None:
            self._sink(message)
        else:
            self._queue().put(message)

    def _queue(self) -> Queue:
        if self._inbox is None:
            self._inbox = Queue()
            if self.closed.is_set():
                self._inbox.put(_END)
        return self._inbox

    def __iter__(self) -> Iterator[Message]:
        """What the peer sent, until the link closes (for a link no bridge has taken)."""
        inbox = self._queue()
        while True:
            item = inbox.get()
            if item is _END:
                inbox.put(_END)
                return
            yield item

    def peek(self) -> Message | None:
        """The first message the peer sent, left where it is for whoever takes the link
        (None: it closed first); waits for it. Client mode picks its bridge on it."""
        item = self._queue().peek()
        return None if item is _END else item

    def attach(self, sink: Callable[[Message], None], on_end: Callable[[], None]) -> None:
        """From now on pass each message to ``sink`` in the deliverer's greenlet, and call
        ``on_end`` when the link closes. Whatever already waits in the inbox goes first."""
        inbox = self._inbox
        while inbox is not None and not inbox.empty():
            item = inbox.get()
            if item is _END:
                inbox.put(_END)
                break
            sink(item)
        if self.ended.is_set():
            on_end()
            return
        self._sink, self._on_end = sink, on_end

    def close(self, reason: str = "closed") -> None:
        """End the link once; later calls are ignored."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        if self._inbox is not None:
            self._inbox.put(_END)
        try:
            self._on_close(reason)
        except Exception:  # a failing cleanup must not stop the other side closing
            logger.exception("%s: error while closing", self.name)
        try:
            if self._on_end is not None:
                self._on_end()
        finally:
            self.ended.set()
            # the bridge's closures name both links: dropped, they leave no cycle that only
            # the garbage collector would free (a closed link delivers nothing)
            self._sink = self._on_end = None

    def _on_close(self, reason: str) -> None:
        """Subclasses release their resources here."""


def _closed_error(request_id, reason: str) -> Message:
    return jsonrpc.error_message(request_id, jsonrpc.CONNECTION_CLOSED,
                                 f"MCP server connection closed: {reason}")


def _answer_pending(link: Link, pending: dict, reason: str) -> None:
    for request_id in list(pending.values()):
        try:
            link.send(_closed_error(request_id, reason))
        except LinkClosed:
            return
    pending.clear()


def _counter(source: Link, target: Link) -> Callable[[Message], None] | None:
    """What counts source -> target messages: server mode's ``Registry.spawn`` gives each
    child a ``meter``; client mode has none."""
    meter = getattr(target, "meter", None)
    if meter is not None:
        return meter.client_to_server
    meter = getattr(source, "meter", None)
    return None if meter is None else meter.server_to_client


def _relayer(source: Link, target: Link, sent: dict, answered: dict) -> Callable[[Message], None]:
    """A sink that moves source -> target; it tracks requests in ``sent``, answers in
    ``answered``, and answers a request the target can no longer take."""
    count = _counter(source, target)
    send = target.send
    # with traces on (server/traced_meter.py) the server's meter hands on each request's
    # trace context in a copy of it; chosen once here, so no message pays when they are off
    wrap_send = getattr(getattr(target, "meter", None), "wrap_send", None)
    if wrap_send is not None:
        send = wrap_send(send)

    def relay(message: Message) -> None:
        kind = message.kind
        if count is not None:  # before send: an upstream may answer within send()
            count(message)
        if kind == jsonrpc.REQUEST:
            sent[jsonrpc.id_key(message.id)] = message.id
        elif kind == jsonrpc.RESPONSE:
            answered.pop(jsonrpc.id_key(message.id), None)
        elif message.method == "notifications/cancelled":
            sent.pop(jsonrpc.id_key(message.params.get("requestId")), None)
        try:
            send(message)
        except ServerBusy:  # the sender answers the client; nothing was sent
            if kind == jsonrpc.REQUEST:
                sent.pop(jsonrpc.id_key(message.id), None)
            raise
        except LinkClosed:
            if kind == jsonrpc.REQUEST:
                sent.pop(jsonrpc.id_key(message.id), None)
                try:
                    source.send(_closed_error(message.id, target.close_reason))
                except LinkClosed:
                    pass
            else:
                logger.warning("%s closed; dropped %r", target.name, message)
        except Exception:  # a bug must close the pair, not crash whoever delivered
            logger.exception("relay %s -> %s failed", source.name, target.name)
            source.close("proxy error")
            target.close("proxy error")

    return relay


def bridge(down: Link, up: Link) -> None:
    """Relay between ``down`` (the client side) and ``up`` (the server side).

    Each message is relayed in the greenlet that delivered it (no queue, no extra switch).
    When ``up`` closes, requests the client sent that are still unanswered get a JSON-RPC
    error on ``down``, then ``down`` closes; when ``down`` closes, ``up`` closes. Both
    links' ``ended`` events tell when they have finished closing (e.g. the remote session is
    deleted); nothing else waits here.
    """
    client_requests: dict = {}  # sent down -> up, awaiting an answer from up
    server_requests: dict = {}  # sent up -> down, awaiting an answer from down

    def up_ended() -> None:
        reason = up.close_reason or "upstream ended"
        _answer_pending(down, client_requests, reason)
        down.close(reason)

    def down_ended() -> None:
        up.close(down.close_reason or "client ended")

    up.peer_ready = down.ready
    up.attach(_relayer(up, down, server_requests, client_requests), up_ended)
    down.attach(_relayer(down, up, client_requests, server_requests), down_ended)

