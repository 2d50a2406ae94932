"""The supervisor: owns every server process of one app, and hands sessions their upstream.

A session does not spawn or own a child. It asks ``upstream(server, session)`` and gets a
link: its own child (per-session mode, the default) or a port of the server's shared
:class:`Multiplexer` (``--shared-child``, ``"shared": true``, ``--stateless``). The supervisor
starts the children (recording spawn failures, starts and exits for ``/readyz`` and
``/metrics``), knows which run and for whom (``/status``), and stops them all at shutdown;
the multiplexer restarts a shared child through it, with backoff and a crash-loop bound.

It builds nothing it imports: the app (``server/app.py``, the composition root) hands it the
classes to start (the child process, the multiplexer, the 2026-07-28 lane) and the metrics to
count into, so the supervisor stays a small module low in the layout. It never relays.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Protocol

import gevent

from mcp_proxy.children.health import ServerHealth
from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.errors import LegacyOnly, SpawnError

logger = logging.getLogger(__name__)


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


class Supervisor:
    """Every child of one app: started here, watched here, stopped here."""

    def __init__(self, settings: ServerSettings, metrics: ChildMetrics, child: type,
                 multiplexer: type, lane: type, combiner: type | None = None) -> None:
        """``child``, ``multiplexer`` and ``lane`` are the classes to start (the app's
        ``StdioChild``, ``Multiplexer`` and ``ModernLane``): classes, not any callables, since
        ``describe`` tells a child and a shared child's port apart by them. ``combiner``
        (``Combiner``) is what a session of a combined server gets, in front of its members'
        links."""
        self.settings = settings
        self.metrics = metrics
        self._child, self._multiplexer, self._lane = child, multiplexer, lane
        self._combiner = combiner
        self.health = {name: ServerHealth() for name in settings.servers}
        self.children: dict[Child, str] = {}  # running child -> its server's name
        self.spawned = 0
        self.shared = {name: self._shared(name)
                       for name, spec in settings.servers.items()
                       if spec.shared and not spec.members}
        self.lanes: dict[str, Shared] = {}

    def _shared(self, server_name: str) -> Shared:
        label = f"shared:{server_name or 'default'}"
        return self._multiplexer(label, lambda: self.spawn(server_name, label))

    def upstream(self, server_name: str, session_name: str) -> Any:
        """The link a new session of ``server_name`` relays to; raises SpawnError."""
        spec = self.settings.servers[server_name]
        if spec.members:  # each member's link is what a session of that member gets
            if self._combiner is None:
                raise SpawnError(f"{server_name}: combined servers are not served here")
            combiner = self._combiner(server_name, spec, self.upstream, session_name)
            combiner.meter = self.metrics.relay_meter(server_name)  # counted as its own
            return combiner
        mux = self.shared.get(server_name)
        if mux is None:
            return self.spawn(server_name, session_name)
        mux.ensure_started()
        port = mux.port(session_name)
        port.meter = self.metrics.relay_meter(server_name)
        return port

    def modern(self, server_name: str) -> Shared:
        """The server's 2026-07-28 lane, made on first use (its child starts on first need)."""
        if self.settings.servers[server_name].members:
            # a combined server is not served in the 2026-07-28 era (docs/server-mode.md)
            raise LegacyOnly(f"{server_name}: a combined server speaks the 2025 era only")
        lane = self.lanes.get(server_name)
        if lane is None:
            label = f"modern:{server_name or 'default'}"
            lane = self.lanes[server_name] = self._lane(label,
                                                        lambda: self.spawn(server_name, label))
        return lane

    def spawn(self, server_name: str, label: str) -> Child:
        """Start a child of ``server_name``; record how it starts and ends."""
        settings = self.settings
        try:
            child = self._child(settings.servers[server_name], label, settings.max_frame,
                                stop_grace=settings.stop_timeout / 3,
                                write_timeout=settings.write_timeout)
        except SpawnError as exc:
            self.health[server_name].spawn_failed(str(exc))
            self.metrics.spawn_failed(server_name)
            raise
        self.spawned += 1
        self.children[child] = server_name
        self.health[server_name].spawned()
        self.metrics.child_started(server_name)
        child.meter = self.metrics.relay_meter(server_name)  # the relay counts through it
        started = time.monotonic()  # a callback, not a greenlet per child: it must not block
        child.stopped.rawlink(lambda _: self._stopped(server_name, child, started))
        return child

    def _stopped(self, server_name: str, child: Child, started: float) -> None:
        self.children.pop(child, None)
        code = child.process.returncode
        self.health[server_name].exited(code, time.monotonic() - started)
        self.metrics.child_exited(server_name, code)

    def problems(self, server_name: str, now: float) -> list[str]:
        """Why a new session of ``server_name`` would not get a working server now."""
        found = self.health[server_name].problems(now)
        for mux in (self.shared.get(server_name), self.lanes.get(server_name)):
            if mux is not None and mux.state == "crash loop":
                found.append(f"{mux.name} in a crash loop, not restarted: {mux.failure}")
        return found

    def mode(self, server_name: str) -> str:
        if self.settings.servers[server_name].members:
            return "combined"
        return "shared" if server_name in self.shared else "per-session"

    def running(self, server_name: str) -> int:
        return sum(1 for name in self.children.values() if name == server_name)

    def describe(self, upstream: Any) -> dict | None:
        """What /status shows of a session's upstream: its process, and whether it is shared."""
        # a port of a shared child knows its multiplexer; a remote upstream is no process
        shared = isinstance(getattr(upstream, "mux", None), self._multiplexer)
        child = upstream.mux.child if shared else upstream
        if not isinstance(child, self._child):
            return None
        return {"pid": child.pid, "state": child.state, "shared": shared}

    def stop_all(self, reason: str, timeout: float) -> None:
        """Stop every child, waiting (bounded) for each; kill what outlives the deadline."""
        for mux in (*self.shared.values(), *self.lanes.values()):
            mux.close(reason)
        children = list(self.children)
        for child in children:
            child.close(reason)
        gevent.joinall([gevent.spawn(c.stopped.wait) for c in children], timeout=timeout)
        for child in children:  # past the deadline: no orphans, whatever they ignore
            if not child.stopped.is_set():
                child.kill_now()

    def signal_all(self) -> None:
        """SIGTERM every child's process group now, without waiting (for exit hooks)."""
        for child in list(self.children):
            child.kill_now(signal.SIGTERM)
