"""Which era bridge a server's sessions and 2026-07-28 requests use (issue 25).

:class:`EraChoice` is the era half of the :class:`~mcp_proxy.children.supervisor.Supervisor`
(a mixin it inherits; it never imports the supervisor). It keeps each server's era once it is
found out (``eras``) and picks, per kind of server:

- **a 2026-07-28 request** goes to the server's lane (``modern``): a shared child opened with
  ``server/discover`` for a local server, and for a remote one (``"url"``, Streamable HTTP)
  one remote link that carries the requests as they are (the lane rewrites ids and seals
  ``requestState``); the lane's ``server/discover`` finds out, once, whether the server
  speaks that era. One that does not (``LegacyOnly``), a remote over HTTP+SSE and a
  combined server go to the modern->legacy bridge (``bridge``: ``legacy_bridge.py``), whose
  2025-era session is a child of the server, a remote session of the remote, or a
  :class:`Combiner` in front of the combined server's members;
- **a 2025-era session** of a 2026-07-28-only server gets the era bridge in front of its
  upstream (``face``, ``ModernChildAsLegacy``): of its child, of a port of its lane, or of
  its remote session when the remote refused the start-up probe's ``initialize``.

Each choice is logged once per server, and ``/status`` shows it (``describe``, and the
server's ``modern_lane``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp_proxy.children.supervised import Remote, Shared
from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.errors import LegacyOnly, SpawnError

logger = logging.getLogger(__name__)

TO_MODERN = "2025 client -> 2026-07-28 server"  # what /status calls each bridge
TO_LEGACY = "modern->legacy"


class EraChoice:
    """The supervisor's choice of era bridge (see the module docstring)."""

    # what the Supervisor provides
    settings: ServerSettings
    metrics: Any
    shared: dict[str, Shared]
    lanes: dict[str, Shared]
    remotes: dict[str, Remote]
    eras: dict[str, str]
    bridges: dict[str, Any]
    _face: type | None
    _lane: type
    _make_bridge: Any
    _combiner: type | None

    spawn: Callable[[str, str], Any]
    upstream: Callable[[str, str], Any]

    def _bridge(self, server_name: str, upstream: Any, era: str) -> Any:
        return self._face(upstream, era, lambda found: self.learned(server_name, found),
                          self.settings.session_idle_timeout)

    def remote_session(self, server_name: str, remote: Remote, label: str) -> Any:
        """A 2025-era session's link to a remote: its remote session, behind the era bridge
        when the remote speaks only 2026-07-28 (or may: its era is not known yet)."""
        try:
            link = remote.link(label)
        except SpawnError:
            self.metrics.spawn_failed(server_name)
            raise
        link.meter = self.metrics.relay_meter(server_name)
        era = self.eras.get(server_name) or remote.era
        if era == "legacy" or self._face is None or remote.transport == "sse":
            return link
        return self._bridge(server_name, link, era or "auto")

    def _refused_as_modern(self, server_name: str, mux: Shared) -> bool:
        """The shared child answered the proxy's ``initialize`` with an error: whether the
        server speaks 2026-07-28 (the lane asks a child of its own ``server/discover``)."""
        if self._face is None or not getattr(mux, "refused", False):
            return False
        try:
            self.modern(server_name).ensure_started()
        except SpawnError:
            return False
        self.learned(server_name, "modern")
        return True

    def learned(self, server_name: str, era: str) -> None:
        """A session found out the server's era: kept for every later session."""
        if self.eras.get(server_name) != era:
            self.eras[server_name] = era
            if era == "modern":
                logger.info("server %r speaks only 2026-07-28: its 2025-era sessions are "
                            "bridged to it (%s)", server_name or "default", TO_MODERN)

    def modern(self, server_name: str) -> Shared:
        """The server's 2026-07-28 lane, made on first use (its child, or its remote link,
        starts on first need); LegacyOnly for a server that cannot have one."""
        if self.spec(server_name).members:  # its members speak 2025 to it
            raise LegacyOnly(f"{server_name}: a combined server is served through the "
                             f"2025 era of its members")
        remote = self.remotes.get(server_name)
        if remote is not None and remote.transport == "sse":
            raise LegacyOnly(f"{server_name}: a remote over HTTP+SSE speaks the 2025 era")
        lane = self.lanes.get(server_name)
        if lane is None:
            label = f"modern:{server_name or 'default'}"
            if remote is not None:
                spawn = lambda: remote.link(label)  # noqa: E731
            else:
                spawn = lambda: self.spawn(server_name, label)  # noqa: E731
            lane = self.lanes[server_name] = self._lane(label, spawn)
        return lane

    def bridgeable(self, server_name: str) -> bool:
        """Whether a server the 2026-07-28 era cannot reach directly can be bridged for its
        requests: every kind can (a child, a remote, a combined server), when the app
        handed a bridge."""
        return self._make_bridge is not None

    def bridge(self, server_name: str) -> Any:
        """The modern->legacy bridge of a server that cannot serve 2026-07-28 requests
        itself, made on first use; its sessions' upstream is what a 2025-era session of the
        server would get without an era bridge."""
        bridge = self.bridges.get(server_name)
        if bridge is None:
            label = f"bridge:{server_name or 'default'}"
            spec = self.spec(server_name)
            remote = self.remotes.get(server_name)
            if spec.members:
                spawn = lambda child_label: self.combiner_for(server_name, child_label)  # noqa: E731
            elif remote is not None:
                spawn = lambda child_label: remote.link(child_label)  # noqa: E731
            else:
                spawn = lambda child_label: self.spawn(server_name, child_label)  # noqa: E731
            bridge = self.bridges[server_name] = self._make_bridge(
                label, spawn, server_name in self.shared)
            if spec.members or remote is not None:  # a child's lane logs its own probe
                logger.info("server %r: 2026-07-28 requests are carried on 2025-era "
                            "sessions (bridge %s)", server_name or "default", TO_LEGACY)
        return bridge

    def combiner_for(self, server_name: str, session_name: str) -> Any:
        """A session's link to a combined server: a Combiner in front of its members."""
        if self._combiner is None:
            raise SpawnError(f"{server_name}: combined servers are not served here")
        spec = self.spec(server_name)
        combiner = self._combiner(server_name, spec, self.upstream, session_name)
        combiner.meter = self.metrics.relay_meter(server_name)  # counted as its own
        self.combined.track(server_name, combiner)  # its members' state, for /status
        return combiner
