"""Port: one client session's link to a shared child, and the client's state the child needs.

A port rewrites nothing itself: what the client sends goes to its hub (the
:class:`~mcp_proxy.children.multiplexer.Multiplexer`, which routes and rewrites ids and tokens;
the port knows it only as a :class:`Hub`); what the multiplexer routes to this client arrives
by ``deliver``.
The port keeps what is the client's own: the capabilities and version from its
``initialize``, its log level, its requests in flight on the child (original id -> child id),
the server requests it was given (client-facing id -> the child's id) and its resource
subscriptions.
"""

from __future__ import annotations

from typing import Any, Protocol

from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link
from mcp_proxy.errors import LinkClosed

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


class Hub(Protocol):
    """What a port needs of the multiplexer it is a port of."""

    child: Link | None  # the shared child while it runs (what /status shows)

    def route(self, port: Port, message: Message) -> None: ...

    def release(self, port: Port) -> None: ...


class Port(Link):
    """A client session's end of a shared child."""

    def __init__(self, mux: Hub, name: str) -> None:
        super().__init__(name)
        self.mux = mux
        self.capabilities: dict = {}
        self.version: str | None = None
        self.level: str | None = None  # from logging/setLevel; None: everything the child sends
        self.inflight: dict[tuple, int] = {}  # id_key(client's id) -> child id
        self.server_requests: dict[tuple, Any] = {}  # id_key(client-facing id) -> child's id
        self.subscriptions: set[str] = set()
        self.principal = ""  # who the HTTP client is (modern lane: binds its request states)
        self.peer = "?"  # its address (and key id), as a refusal's log line names it
        # told (running, why) when the child dies and when it is back: a combined server's
        # member (combined_members.py) hides its tools meanwhile
        self.on_child: Any = None
        self._next_server_id = 0

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self.mux.route(self, message)

    def admits(self, level: Any) -> bool:
        """Whether a log line at ``level`` is for this client, by its own setLevel."""
        return admits(self.level, level)

    def declares(self, method: str | None) -> bool:
        """Whether this client declared what a server request of ``method`` needs."""
        need = NEEDS.get(method or "")
        return need is None or isinstance(self.capabilities.get(need), dict)

    def server_id(self) -> int:
        """A fresh client-facing id for a server request."""
        self._next_server_id += 1
        return self._next_server_id

    def deliver_if_open(self, message: Message) -> bool:
        """Deliver unless this port has closed meanwhile; say whether it took the message."""
        try:
            self.deliver(message)
        except LinkClosed:
            return False
        return True

    def _on_close(self, reason: str) -> None:
        self.mux.release(self)
