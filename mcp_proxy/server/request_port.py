"""A 2026-07-28 request's own end of the modern lane: no session, no bridge, one stream.

This module owns that port; the lane (children/lane.py) routes to it, the relay (relay.py)
makes it.

A modern request stands alone, so it needs none of a session's machinery: the lane routes
what belongs to the request (its progress, its log lines, its answer; a listen's
notifications) to this port, which queues it on the request's stream, within the session
byte budget (``--max-queued-size``), and ends the stream with the answer. Closing the port
(its client closed the stream, or the answer went out) releases it from the lane, which
cancels on the child whatever is still in flight.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Protocol

from mcp_proxy.children.port import Hub, Port
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.errors import LinkClosed
from mcp_proxy.server.streams import Stream, StreamOwner

if TYPE_CHECKING:
    from mcp_proxy.server.sessions import Registry

logger = logging.getLogger(__name__)

_numbers = itertools.count(1)


class Lane(Hub, Protocol):
    """What a request's port needs of the modern lane (children/lane.py's ``ModernLane``):
    what any :class:`Port` needs of its multiplexer, and to be counted among its ports."""

    def admit(self, port: Port) -> Port: ...


class RequestPort(StreamOwner, Port):
    """One modern request's port; it is also its stream's owner (the byte budget)."""

    transport = "modern"

    idle_limit = float("inf")  # for the registry's reaper: only a stall ends it early

    def __init__(self, lane: Lane, registry: Registry, message: Message,
                 caller: str) -> None:
        super().__init__(lane, f"modern:{next(_numbers)}")
        self.principal = caller
        self.registry = registry
        self.settings = registry.settings
        self.queued = 0
        self.draining: set[Stream] = set()
        self.key = id_key(message.id)
        self.stream = Stream(self)
        lane.admit(self)
        registry.requests.add(self)  # its reaper ends it if its client takes nothing

    # press() stays the owner's no-op: a shared child is never paused for one slow caller

    def deliver(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        meter = getattr(self, "meter", None)
        if meter is not None:
            meter.server_to_client(message)
        self.stream.send(message)
        if message.kind == jsonrpc.RESPONSE and id_key(message.id) == self.key:
            self.stream.end()

    def idle(self, now: float) -> float:
        return 0.0

    def _on_close(self, reason: str) -> None:
        super()._on_close(reason)
        self.registry.requests.discard(self)
        self.stream.end()
        # the port and its stream name each other: with that cycle cut, a request's objects
        # go when its answer does, not in a pass of the garbage collector (those passes cost
        # a request on the lane as much as the rest of its difference to a session's)
        self.stream.disown()
