"""Port: one client session's link to a shared child, and the client's state the child needs.

A port rewrites nothing itself: what the client sends goes to its :class:`Multiplexer`, which
rewrites ids and tokens; what the multiplexer routes to this client arrives by ``deliver``.
The port keeps what is the client's own: the capabilities and version from its
``initialize``, its log level, its requests in flight on the child (original id -> child id),
the server requests it was given (client-facing id -> the child's id) and its resource
subscriptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link
from mcp_proxy.errors import LinkClosed

if TYPE_CHECKING:
    from gevent.event import AsyncResult

    from mcp_proxy.children.multiplexer import Multiplexer

# RFC 5424 severities as MCP names them, least severe first
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# the client capability a server request needs on its way to that client
NEEDS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
         "roots/list": "roots"}



def admits(threshold: Any, level: Any) -> bool:
    """Whether a log line at ``level`` passes ``threshold`` (unknown names pass)."""
    if threshold not in _RANK or level not in _RANK:
        return True
    return _RANK[level] >= _RANK[threshold]


def more_verbose(levels) -> str | None:
    """The most verbose of ``levels`` (None if there is none)."""
    ranked = [level for level in levels if level in _RANK]
    return min(ranked, key=_RANK.__getitem__) if ranked else None


class Call:
    """A request in flight on the child: whose it is, and what to restore on the answer."""

    __slots__ = ("port", "original", "token", "waiter", "method", "level")

    def __init__(self, port: Port | None, original: Any, token: Any = None,
                 waiter: AsyncResult | None = None, method: str | None = None,
                 level: str | None = None) -> None:
        self.port, self.original, self.token, self.waiter = port, original, token, waiter
        self.method = method
        self.level = level  # a 2026-07-28 request's own log level: it asked for log lines


class Port(Link):
    """A client session's end of a shared child."""

    def __init__(self, mux: Multiplexer, name: str) -> None:
        super().__init__(name)
        self.mux = mux
        self.capabilities: dict = {}
        self.version: str | None = None
        self.level: str | None = None  # from logging/setLevel; None: everything the child sends
        self.inflight: dict[tuple, int] = {}  # id_key(client's id) -> child id
        self.server_requests: dict[tuple, Any] = {}  # id_key(client-facing id) -> child's id
        self.subscriptions: set[str] = set()
        self.principal = ""  # who the HTTP client is (modern lane: binds its request states)
        self._next_server_id = 0

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self.mux.from_client(self, message)

    def admits(self, level: Any) -> bool:
        """Whether a log line at ``level`` is for this client, by its own setLevel."""
        return admits(self.level, level)

    def can_take(self, method: str | None) -> bool:
        """Whether this client declared what a server request of ``method`` needs."""
        need = NEEDS.get(method or "")
        return need is None or isinstance(self.capabilities.get(need), dict)

    def server_id(self) -> int:
        """A fresh client-facing id for a server request."""
        self._next_server_id += 1
        return self._next_server_id

    def offer(self, message: Message) -> bool:
        """Deliver unless this port has closed meanwhile; say whether it took the message."""
        try:
            self.deliver(message)
        except LinkClosed:
            return False
        return True

    def _on_close(self, reason: str) -> None:
        self.mux.release(self)
