"""The supervisor: owns every server process of one app, and hands sessions their upstream.

A session does not spawn or own a child. It asks ``upstream(server, session)`` and gets a
link: its own child (per-session mode, the default) or a port of the server's shared
:class:`Multiplexer` (``--shared-child``, ``"shared": true``, ``--stateless``). The supervisor
starts the children (recording spawn failures, starts and exits for ``/readyz`` and
``/metrics``), knows which run and for whom (``/status``), and stops them all at shutdown;
the multiplexer restarts a shared child through it, with backoff and a crash-loop bound.
A remote server (``"url"``) gives each session a remote session of its own instead (or, when
shared, a port of one remote session: ``children/shared_remote.py``), and its state joins
``/readyz``.

It builds nothing it imports: the app (``server/app.py``, the composition root) hands it the
classes to start (the child process, the multiplexer, the lane, the era bridges) and the
metrics to count into, so it stays a small module low in the layout. It never relays.

It keeps each server's era once a session found it out (``eras``); which era bridge a
session or a 2026-07-28 request gets is ``era_choice.py``'s (a mixin of this class). While a
local server's era is unknown, a per-session child is wrapped by a bridge that relays until
the child refuses ``initialize``; a shared child that refuses the proxy's ``initialize`` has
its era asked by the lane (``server/discover`` on a child of its own).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import gevent

from mcp_proxy.children.combined_status import CombinedWatch
from mcp_proxy.children.era_choice import TO_MODERN, EraChoice
from mcp_proxy.children.health import ServerHealth
from mcp_proxy.children.supervised import Child, ChildMetrics, Remote, Shared
from mcp_proxy.config.settings import ServerSettings, ServerSpec
from mcp_proxy.errors import ConfigProblems, ServerRemoved, SpawnError

logger = logging.getLogger(__name__)


class Supervisor(EraChoice):
    """Every child of one app: started here, watched here, stopped here."""

    def __init__(self, settings: ServerSettings, metrics: ChildMetrics, child: type,
                 multiplexer: type, lane: type, remote: type | None = None, *,
                 face: type | None = None, bridge: Any = None,
                 combiner: type | None = None, shared_remote: type | None = None) -> None:
        """``child``, ``multiplexer`` and ``lane`` are the classes to start (the app's
        ``StdioChild``, ``Multiplexer`` and ``ModernLane``): classes, not any callables, since
        ``describe`` tells a child and a shared child's port apart by them; ``remote`` makes
        a remote server (``"url"`` entries) of its name, settings and tool rules. ``face`` is
        the era bridge a 2025-era session gets in front of a 2026-07-28-only server
        (``ModernChildAsLegacy``; None: never bridged); ``bridge`` makes the modern->legacy
        bridge of a legacy-only server (the app's ``LegacyBridge``); ``combiner``
        (``Combiner``) is what a session of a combined server gets, in front of its
        members' links; ``shared_remote`` (``SharedRemote``) shares one remote session of a
        shared remote server."""
        self.settings = settings
        self.metrics = metrics
        self._child, self._multiplexer, self._lane = child, multiplexer, lane
        self._make_bridge, self._combiner = bridge, combiner
        self._shared_remote = shared_remote or multiplexer
        self.health = {name: ServerHealth() for name in settings.servers}
        self.children: dict[Child, str] = {}  # running child -> its server's name
        self.spawned = 0
        self.remotes: dict[str, Remote] = {
            name: remote(name, spec.remote, spec.tools)
            for name, spec in settings.servers.items() if spec.remote is not None}
        self.shared = {name: self.shared_child(name)
                       for name, spec in settings.servers.items()
                       if spec.shared and not spec.members}
        self.lanes: dict[str, Shared] = {}
        self._face = face
        self.eras: dict[str, str] = {}  # server -> "legacy" or "modern", once found out
        self.bridges: dict[str, Any] = {}  # server -> its modern->legacy bridge, if it needs one
        self.combined = CombinedWatch(self)  # combined servers' sessions, for their members' state

    def shared_child(self, server_name: str) -> Shared:
        """A new shared child of ``server_name`` (started on first need)."""
        label = f"shared:{server_name or 'default'}"
        remote = self.remotes.get(server_name)
        if remote is not None:  # one remote session for every session
            return self._shared_remote(label, lambda: remote.link(label))
        return self._multiplexer(label, lambda: self.spawn(server_name, label))

    def upstream(self, server_name: str, session_name: str) -> Any:
        """The link a new session of ``server_name`` relays to; raises SpawnError."""
        spec = self.spec(server_name)
        if spec.members:  # each member's link is what a session of that member gets
            return self.combiner_for(server_name, session_name)
        remote = self.remotes.get(server_name)
        if remote is not None and server_name not in self.shared:
            return self.remote_session(server_name, remote, session_name)
        mux = self.shared.get(server_name)
        era = self.eras.get(server_name)
        if mux is None:
            child = self.spawn(server_name, session_name)
            if era == "legacy" or self._face is None:
                return child
            return self._bridge(server_name, child, era or "auto")
        if era != "modern":
            try:
                mux.ensure_started()
            except SpawnError:
                if not self._refused_as_modern(server_name, mux):
                    raise
            else:
                self.learned(server_name, "legacy")
                port = mux.port(session_name)
                port.meter = self.metrics.relay_meter(server_name)
                return port
        port = self.modern(server_name).port(session_name)
        port.meter = self.metrics.relay_meter(server_name)
        port.peer = session_name
        return self._bridge(server_name, port, "modern")

    def spec(self, server_name: str) -> ServerSpec:
        """The server's entry; ServerRemoved once a config reload took it away."""
        spec = self.settings.servers.get(server_name)
        if spec is None:
            raise ServerRemoved(f"server {server_name!r} was taken out of the config")
        return spec

    def spawn(self, server_name: str, label: str) -> Child:
        """Start a child of ``server_name``; record how it starts and ends."""
        settings = self.settings
        try:
            child = self._child(self.spec(server_name), label, settings.max_frame,
                                stop_grace=settings.stop_timeout / 3,
                                write_timeout=settings.write_timeout)
        except SpawnError as exc:
            self.health[server_name].spawn_failed(str(exc))
            self.metrics.spawn_failed(server_name)
            raise
        self.spawned += 1
        self.children[child] = server_name
        health = self.health[server_name]  # this entry's: a reload gives a new one its own
        health.spawned()
        self.metrics.child_started(server_name)
        child.meter = self.metrics.relay_meter(server_name)  # the relay counts through it
        started = time.monotonic()  # a callback, not a greenlet per child: it must not block
        child.stopped.rawlink(lambda _: self._stopped(server_name, health, child, started))
        return child

    def _stopped(self, server_name: str, health: ServerHealth, child: Child,
                 started: float) -> None:
        self.children.pop(child, None)
        code = child.process.returncode
        health.exited(code, time.monotonic() - started)
        self.metrics.child_exited(server_name, code)

    def problems(self, server_name: str, now: float) -> list[str]:
        """Why a new session of ``server_name`` would not get a working server now."""
        found = self.health[server_name].problems(now)
        remote = self.remotes.get(server_name)
        if remote is not None and remote.problem() is not None:
            found.append(remote.problem())
        for mux in (self.shared.get(server_name), self.lanes.get(server_name)):
            if mux is not None and mux.state == "crash loop":
                found.append(f"{mux.name} in a crash loop, not restarted: {mux.failure}")
        if self.settings.servers[server_name].members:
            found += self.combined.problems(server_name, now)
        return found

    def mode(self, server_name: str) -> str:
        if server_name in self.remotes:
            return "shared remote" if server_name in self.shared else "remote"
        if self.settings.servers[server_name].members:
            return "combined"
        return "shared" if server_name in self.shared else "per-session"

    def running(self, server_name: str) -> int:
        """The server's processes, or a remote server's open remote sessions."""
        if server_name in self.remotes:
            return len(self.remotes[server_name].links)
        return sum(1 for name in self.children.values() if name == server_name)

    def probe_remotes(self) -> None:
        """Contact each remote server once, together; raise ConfigProblems for those that
        can never work (a sign-in a server cannot do, a refused credential or certificate)."""
        probes = [gevent.spawn(remote.probe) for remote in self.remotes.values()]
        gevent.joinall(probes)
        problems = [probe.value for probe in probes if probe.value]
        if problems:
            raise ConfigProblems(problems)

    def describe(self, upstream: Any) -> dict | None:
        """What /status shows of a session's upstream: its process, whether it is shared,
        the era bridge it uses; a combined server's session, each member's."""
        if self._combiner is not None and isinstance(upstream, self._combiner):
            return {"pid": None, "state": "open", "shared": False, "members": {
                member: self.describe(slot.link) for member, slot in upstream.slots.items()}}
        bridged = self._face is not None and isinstance(upstream, self._face)
        if bridged:  # an era bridge in front of its child or lane port
            bridged, upstream = upstream.bridging, upstream.inner
        # a port of a shared child knows its multiplexer; a remote upstream is no process
        shared = isinstance(getattr(upstream, "mux", None), self._multiplexer)
        child = upstream.mux.child if shared else upstream
        if not isinstance(child, self._child):
            link = child if shared else upstream  # a remote session, shared or its own
            if getattr(link, "recovering", None) is None:
                return None
            return {"pid": None, "state": "recovering" if link.recovering else
                    "connected", "shared": shared, "remote": True,
                    **({"bridge": TO_MODERN} if bridged else {})}
        return {"pid": child.pid, "state": child.state, "shared": shared,
                **({"bridge": TO_MODERN} if bridged else {})}

    def stop_all(self, reason: str, timeout: float) -> None:
        """Stop every child, waiting (bounded) for each; kill what outlives the deadline."""
        for mux in (*self.shared.values(), *self.lanes.values(), *self.bridges.values()):
            mux.close(reason)
        closing = [gevent.spawn(remote.close_all, reason) for remote in self.remotes.values()]
        children = list(self.children)
        for child in children:
            child.close(reason)
        gevent.joinall([*closing, *(gevent.spawn(c.stopped.wait) for c in children)],
                       timeout=timeout)
        for child in children:  # past the deadline: no orphans, whatever they ignore
            if not child.stopped.is_set():
                child.kill_now()

    def signal_all(self) -> None:
        """SIGTERM every child's process group now, without waiting (for exit hooks)."""
        for child in list(self.children):
            child.kill_now(signal.SIGTERM)
