"""What the supervisor (supervisor.py) needs of the classes the app hands it: protocols only.

The app (``server/app.py``) builds the real ones; these say which of their methods the
supervisor calls, so that it imports none of them.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol


class ChildMetrics(Protocol):
    """What the supervisor counts (``server.metrics.Metrics`` is one)."""

    def spawn_failed(self, server: str) -> None: ...

    def child_started(self, server: str) -> None: ...

    def child_exited(self, server: str, code: int | None) -> None: ...

    def relay_meter(self, server: str) -> Any: ...


class Child(Protocol):
    """What the supervisor needs of a child process (``process.StdioChild`` is one)."""

    pid: int
    state: str
    process: Any
    stopped: Any  # gevent Event: set once the process is reaped
    meter: Any

    def close(self, reason: str = ...) -> None: ...

    def kill_now(self, sig: signal.Signals = ...) -> None: ...


class Shared(Protocol):
    """What the supervisor needs of a shared child (``multiplexer.Multiplexer`` is one)."""

    name: str
    state: str
    failure: str
    child: Any

    def ensure_started(self) -> None: ...

    def port(self, name: str) -> Any: ...

    def close(self, reason: str) -> None: ...


class Remote(Protocol):
    """What the supervisor needs of a remote server (``upstream.remote_server.RemoteServer``)."""

    links: set
    transport: str | None  # "sse" or "streamablehttp" once learnt
    era: str | None  # "legacy" or "modern": whether the start-up probe's initialize was taken

    def probe(self) -> str | None: ...

    def link(self, label: str) -> Any: ...

    def problem(self) -> str | None: ...

    def close_all(self, reason: str) -> None: ...
