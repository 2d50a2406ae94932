"""A named server taken out of the supervisor, or put in, by a config reload (SIGHUP).

This module owns what the supervisor holds of one server across a reload: :func:`detach`
takes its shared child, 2026-07-28 lane, modern->legacy bridge, remote server and known era
out of the supervisor (the next session of that name, if any, starts afresh from the new
entry) and hands them back as :class:`Retired`, which stops them once nothing uses them or a
grace has passed; :func:`attach` puts a new entry's in. It never decides what changed
(``server/reload.py`` does) and never ends a session (the sessions' own close stops their
per-session children and their ports).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from mcp_proxy.children.health import ServerHealth
from mcp_proxy.children.supervisor import Supervisor
from mcp_proxy.config.settings import ServerSpec

logger = logging.getLogger(__name__)

_POLL = 0.05  # seconds between two looks at what a retired server still serves


class Retired:
    """What one server held before a reload: stopped when idle, or after the grace."""

    def __init__(self, name: str, muxes: list, remote: Any, children: list) -> None:
        self.name = name
        self.muxes = muxes  # its shared child, lane and bridge (those it had)
        self.remote = remote
        self.children = children  # its processes when it was detached

    def busy(self) -> bool:
        """Whether a request still runs through it (a 2026-07-28 request on its lane, or on
        one of its bridge's legacy sessions)."""
        held = list(self.muxes)
        for mux in self.muxes:  # a LegacyBridge: its sessions per (caller, capabilities)
            held += [one for pool in getattr(mux, "sessions", {}).values() for one in pool]
        return any(getattr(getattr(mux, "sharing", None), "ports", None) for mux in held)

    def stop(self, reason: str, grace: float) -> None:
        """Wait (at most ``grace`` seconds) for its last requests, then stop everything it
        held; what outlives a second grace is killed."""
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            gevent.sleep(_POLL)
        for mux in self.muxes:
            mux.close(reason)
        if self.remote is not None:
            self.remote.close_all(reason)
        for child in self.children:
            child.close(reason)
        gevent.joinall([gevent.spawn(child.stopped.wait) for child in self.children],
                       timeout=grace)
        for child in self.children:
            if not child.stopped.is_set():
                logger.warning("%s: did not stop within %g s of the reload; killed",
                               child.name, grace)
                child.kill_now()


def detach(supervisor: Supervisor, name: str) -> Retired:
    """Take what ``name`` holds out of the supervisor; the caller stops it."""
    muxes = [held for held in (supervisor.shared.pop(name, None),
                               supervisor.lanes.pop(name, None),
                               supervisor.bridges.pop(name, None)) if held is not None]
    supervisor.eras.pop(name, None)
    children = [child for child, server in supervisor.children.items() if server == name]
    return Retired(name, muxes, supervisor.remotes.pop(name, None), children)


def attach(supervisor: Supervisor, name: str, spec: ServerSpec, remote: Any = None) -> None:
    """Give the supervisor a new entry's server (``remote``: its remote server, made and
    probed by the caller); its health starts clean."""
    supervisor.health[name] = ServerHealth()
    if remote is not None:  # first: a shared remote server's child is a session of it
        supervisor.remotes[name] = remote
    if spec.shared and not spec.members:
        supervisor.shared[name] = supervisor.shared_child(name)
