"""Event streams: the queue a streaming response drains.

This module owns a stream's queue and its byte accounting; it never routes a message (the
owner picks the stream) and never writes a response (response_body.py does). A
:class:`Stream` counts the bytes it holds against its owner (a session, a 2026-07-28
request's port, or a forwarded call): while a reader drains the stream, its bytes count as
"in flight to the client" (backpressure on the child); a stream nobody reads yet (the GET
backlog) only counts against the hard budget.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import gevent
from gevent.hub import Waiter

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import LinkClosed, StreamEnded

if TYPE_CHECKING:
    from mcp_proxy.config.settings import ServerSettings

logger = logging.getLogger(__name__)

_END = object()
_WAKE = object()
PING = b": ping\n\n"


def sse_event(data: bytes, event: bytes = b"message") -> bytes:
    return b"".join((b"event: ", event, b"\ndata: ", data, b"\n\n"))  # one copy of data, not two


class StreamOwner:
    """What a stream asks of its owner (a session, a 2026-07-28 request's port, or a forwarded
    call): the byte budget of ``--max-queued-size``, the stall check, and backpressure (none
    by default). A base class its owners derive from, so that streams never import them.
    The owner also has ``close(reason)``, from its other base (not defined here: it would
    come first in the owner's MRO).
    """

    settings: ServerSettings
    name: str
    queued: int  # bytes waiting in the owner's streams
    draining: set  # the streams an HTTP response is writing out

    def charge(self, size: int, reading: bool) -> None:
        """Count ``size`` queued bytes; close the owner if its budget is exhausted."""
        if self.queued + size > self.settings.max_queued and self.queued:
            logger.warning("%s: client is not reading (%d bytes queued); closing it",
                           self.name, self.queued)
            self.close("client stopped reading (outbound buffer full)")
            raise LinkClosed(f"{self.name}: outbound buffer full")
        self.queued += size
        if reading:
            self.press(size)

    def refund(self, size: int, reading: bool) -> None:
        self.queued -= size
        if reading:
            self.press(-size)

    def press(self, delta: int) -> None:
        """Bytes on their way to a reading client moved by ``delta`` (no backpressure here)."""

    def stalled(self, now: float) -> Stream | None:
        """A stream whose client has not taken a chunk for ``--stall-timeout`` seconds."""
        limit = self.settings.stall_timeout
        for stream in self.draining:
            since = stream.writing_since
            if since is not None and now - since > limit:
                return stream
        return None


class _Ignored(set):
    """A set that keeps nothing: a disowned stream's ``draining``."""

    def add(self, item) -> None:
        pass


class _Unowned(StreamOwner):
    """The owner of a stream whose owner closed (``Stream.disown``): its reader may still
    take what is queued, and nothing is counted any more."""

    name = "closed"
    queued = 0
    draining = _Ignored()

    def charge(self, size: int, reading: bool) -> None:
        pass

    def refund(self, size: int, reading: bool) -> None:
        pass


_UNOWNED = _Unowned()


class Stream:
    """One event stream of its owner: a queue drained by a streaming response.

    A deque and the waiters of blocked readers rather than a gevent ``Queue``: a stream is
    made for every request, and a ``Queue`` plus a ``Timeout`` per wait cost about a tenth
    of relaying a small message.
    """

    def __init__(self, session: StreamOwner, reading: bool = True) -> None:
        self.session = session  # its owner: a session, a request's port, a forwarded call
        self.ended = False
        self.queued = 0  # bytes waiting here
        self.reading = reading  # a response drains it (else what waits here is a backlog)
        self.writing_since: float | None = None  # a chunk was handed over, not yet taken
        self.abort: Callable[[], None] | None = None  # cut the client's connection
        self._items: deque = deque()
        self._readers: deque[Waiter] = deque()  # readers blocked in read(), oldest first
        self._generation = 0  # which reader a wake-up is for

    def _enqueue(self, item) -> None:
        self._items.append(item)
        readers = self._readers
        if readers:  # the hub resumes them: a waiter is switched to from the hub only
            schedule = gevent.get_hub().loop.run_callback
            while readers:  # all of them: one killed before it ran must not keep the item
                schedule(readers.popleft().switch, None)  # from a reader still waiting

    def send(self, message: Message) -> None:
        """Queue ``message`` for the reader, within the owner's byte budget."""
        size = len(message.raw)
        self.session.charge(size, self.reading)
        self.queued += size
        self._enqueue(message)

    def end(self) -> None:
        """No more messages: the reader gets what is queued, then the end."""
        if not self.ended:
            self.ended = True
            self._enqueue(_END)

    def discard(self) -> None:
        """The reader is gone for good: end, and refund what it will never take."""
        self.end()
        items = self._items
        while items:
            item = items.popleft()
            if isinstance(item, Message):
                self._count_out(item)
        self._enqueue(_END)

    def attach_reader(self) -> None:
        """A response starts draining this stream: its bytes now weigh on backpressure."""
        if not self.reading:
            self.reading = True
            self.session.press(self.queued)
        self._generation += 1

    def detach_reader(self) -> None:
        """The response ended; what is left stays queued as a backlog for the next reader."""
        if self.reading:
            self.reading = False
            self.session.press(-self.queued)
        self.writing_since = None

    def disown(self) -> None:
        """Its owner closed: it no longer names it, so the two leave no cycle for the
        garbage collector (a stateless request's session is one per POST)."""
        self.session = _UNOWNED

    def wake(self) -> None:
        """Make the current reader's wait end with :class:`StreamEnded` (its client left)."""
        self._enqueue((_WAKE, self._generation))

    def _wait(self, timeout: float) -> None:
        """Block until something is queued or ``timeout`` passed (either may be first)."""
        waiter = Waiter()
        self._readers.append(waiter)
        timer = gevent.get_hub().loop.timer(timeout)
        timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            timer.close()
            try:
                self._readers.remove(waiter)
            except ValueError:  # an _enqueue took it already
                pass

    def read(self, timeout: float) -> Message | None:
        """The next message, or None after ``timeout``; raises StreamEnded once it ended."""
        items = self._items
        if not items:
            self._wait(timeout)
            if not items:  # the time passed (or another reader took what woke us)
                return None
        item = items.popleft()
        if item is _END:
            items.appendleft(_END)  # stay ended for any later reader
            raise StreamEnded
        if isinstance(item, tuple):  # a wake-up; a stale one (an earlier reader's) is a ping
            if item[1] == self._generation:
                raise StreamEnded
            return None
        self._count_out(item)
        return item

    def _count_out(self, item: Message) -> None:
        # an item leaves (read, or discarded): its bytes leave this stream's count and its owner's
        size = len(item.raw)
        self.queued -= size
        self.session.refund(size, self.reading)

    def events(self, keepalive: float, until_response: bool = False) -> Iterator[bytes]:
        """SSE bytes: each message as an event, a ping comment after ``keepalive`` of silence;
        with ``until_response``, the stream stops after the first response it carries."""
        while True:
            try:
                message = self.read(keepalive)
            except StreamEnded:
                return
            yield PING if message is None else sse_event(message.raw)
            if until_response and message is not None and message.kind == jsonrpc.RESPONSE:
                return
