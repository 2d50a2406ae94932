"""A Streamable HTTP session (2025-03-26 and later): where each message from the child goes.

This module owns a session's streams and the routing between them: each POSTed request gets
its own stream; a response goes to the stream of its request, progress to the stream that owns
its token, a log line to an open request's stream, anything else to the GET stream if one is
open, else to an open request's stream, else to a backlog that the next GET stream drains.
It never speaks HTTP: the routes (streamable_transport.py) and the relay (relay.py) do.
"""

from __future__ import annotations

import logging
import time

import gevent

from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.errors import LinkClosed
from mcp_proxy.server.sessions import Registry, Session
from mcp_proxy.server.streams import Stream

logger = logging.getLogger(__name__)

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

    def deliver(self, message: Message) -> None:
        self.idle_limit = self.settings.session_idle_timeout
        super().deliver(message)
        if message.method == "notifications/cancelled":
            key = id_key(message.params.get("requestId"))
            stream = self.requests.get(key)
            if stream is not None:
                # the child may never answer now; end the POST stream as the SDK does
                stream.send(jsonrpc.error_message(
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
            stream.send(message)
            self.release(key)
            return
        self._route(message).send(message)

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
        self.unsolicited.disown()
