"""Sharing: what the sessions on one shared child hold of it, with one owner.

Owns the ports on the child, the calls in flight (the child's id -> :class:`ChildCall`: whose
request it is and what to restore on its answer), the id counter, the calls cancelled whose
handler may still run, and how many ports hold each resource subscription. Only its methods
change these tables: the multiplexer's inbound routing (``fanin.py``) opens and cancels
calls, its outbound routing (``fanout.py``) closes them, and the multiplexer ends them all
when the child dies. It never sends anything: it is bookkeeping, not a link.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gevent.event import AsyncResult

    from mcp_proxy.core.jsonrpc import Message

# how long a cancelled request's handler may still ask its client something (the variable
# is internal: the tests shorten it)
DRAIN = float(os.environ.get("MCP_PROXY_CANCEL_DRAIN", "10"))
_DRAINING_MAX = 1024  # cancelled requests remembered per child (the oldest go first)


class Member(Protocol):
    """What routing needs of a client's end of the child (``port.Port`` is one)."""

    name: str
    capabilities: dict
    version: str | None
    level: str | None
    principal: str
    inflight: dict[tuple, int]
    server_requests: dict[tuple, Any]
    subscriptions: set[str]

    def admits(self, level: Any) -> bool: ...

    def declares(self, method: str | None) -> bool: ...

    def server_id(self) -> int: ...

    def deliver_if_open(self, message: Message) -> bool: ...


class ChildCall:
    """A request in flight on the child: whose it is, and what to restore on the answer."""

    __slots__ = ("port", "original", "token", "waiter", "method", "level")

    def __init__(self, port: Member | None, original: Any, token: Any = None,
                 waiter: AsyncResult | None = None, method: str | None = None,
                 level: str | None = None) -> None:
        self.port, self.original, self.token, self.waiter = port, original, token, waiter
        self.method = method
        self.level = level  # a 2026-07-28 request's own log level: it asked for log lines


class Sharing:
    """The ports, calls and subscriptions of one shared child (see the module docstring)."""

    def __init__(self) -> None:
        self.ports: set[Member] = set()
        self.calls: dict[int, ChildCall] = {}
        # cancelled calls whose handler may still run: child id -> (port, until when); a
        # server request meanwhile may be that handler's, so the port still counts as busy
        self.cancelled: dict[int, tuple[Member, float]] = {}
        self.subscribed: dict[str, int] = {}  # uri -> how many ports subscribed
        self._next_id = 0

    def join(self, port: Member) -> None:
        self.ports.add(port)

    def leave(self, port: Member) -> None:
        self.ports.discard(port)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def open_call(self, port: Member | None, original: Any, token: Any = None,
                  waiter: AsyncResult | None = None, method: str | None = None,
                  level: str | None = None) -> int:
        """Record a request about to be sent to the child; its child id."""
        cid = self.new_id()
        self.calls[cid] = ChildCall(port, original, token, waiter, method, level)
        return cid

    def close_call(self, cid: Any) -> ChildCall | None:
        """The call ``cid`` answered, failed or given up on (None if none is in flight)."""
        return self.calls.pop(cid, None)

    def end_calls(self) -> dict[int, ChildCall]:
        """Every call in flight, now ended (the child died)."""
        calls, self.calls = self.calls, {}
        return calls

    def drain(self, port: Member, child_id: int) -> None:
        """A cancelled request: freed, but its client stays the one a server request can be for
        until the server answers it or ``DRAIN`` seconds pass (a server may run a cancelled
        handler on: its sampling must not go to another client that happens to be alone)."""
        now = time.monotonic()
        cancelled = self.cancelled
        for stale in [cid for cid, (_, until) in cancelled.items() if until < now]:
            del cancelled[stale]
        while len(cancelled) >= _DRAINING_MAX:
            del cancelled[next(iter(cancelled))]
        cancelled[child_id] = (port, now + DRAIN)

    def drained(self, child_id: int) -> None:
        """The server answered a cancelled request: its handler has ended."""
        self.cancelled.pop(child_id, None)

    def busy(self) -> list[Member]:
        """The ports with requests in flight (or cancelled within ``DRAIN`` seconds)."""
        now = time.monotonic()
        draining = {port for port, until in self.cancelled.values() if until >= now}
        return [port for port in self.ports if port.inflight or port in draining]

    def subscribe(self, uri: str) -> bool:
        """Add one hold on ``uri``; True if another port already held it."""
        count = self.subscribed[uri] = self.subscribed.get(uri, 0) + 1
        return count > 1

    def drop_subscription(self, uri: str) -> bool:
        """Drop one hold on ``uri``; True if it was the last (the child must be told)."""
        count = self.subscribed.get(uri, 0) - 1
        if count > 0:
            self.subscribed[uri] = count
            return False
        self.subscribed.pop(uri, None)
        return True
