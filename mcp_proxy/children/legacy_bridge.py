"""Which legacy child serves a 2026-07-28 request to a legacy-only server: the bridge's pool.

Owns the bridged children of one configured server (``legacy_adapter.py``'s
``LegacySession``, which translates; this module only picks, starts lazily and reaps):

- a **shared** server (``--shared-child``, ``--stateless``, ``"shared": true``) has one
  legacy child for every modern caller, multiplexed;
- a **per-session** server has one legacy child per (caller, capability fingerprint): the
  caller is the principal of its credentials (``request_state.principal``), the fingerprint
  a digest of the capabilities and client name the child is initialized with, since servers
  gate what they offer on them. A child nobody has used for ``IDLE`` seconds is stopped;
  at most ``MAX_CHILDREN`` run at once (the idle ones are stopped first to make room, else
  the request is refused as busy).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from typing import Any

import gevent

from mcp_proxy.core import greenlets
from mcp_proxy.core.protocol import CAPABILITIES_KEY, CLIENT_INFO_KEY
from mcp_proxy.errors import ServerBusy

logger = logging.getLogger(__name__)

# a bridged child unused this long is stopped (the variable is internal: the tests shorten
# it); five minutes keep a conversation's child warm between a person's turns
IDLE = float(os.environ.get("MCP_PROXY_BRIDGE_IDLE", "300"))
MAX_CHILDREN = 32  # per configured server
# client capabilities the bridge cannot carry yet: their server requests would need
# input_required rounds; the child is not told of them
NOT_CARRIED = ("sampling", "elicitation", "roots")


def carried_capabilities(capabilities: Any) -> dict:
    """The client capabilities a child is initialized with: all but :data:`NOT_CARRIED`."""
    if not isinstance(capabilities, dict):
        return {}
    return {key: value for key, value in capabilities.items() if key not in NOT_CARRIED}


def fingerprint(meta: Any) -> str:
    """A digest of what a child is initialized with for this request's ``_meta``."""
    meta = meta if isinstance(meta, dict) else {}
    info = meta.get(CLIENT_INFO_KEY)
    name = info.get("name") if isinstance(info, dict) else None
    carried = carried_capabilities(meta.get(CAPABILITIES_KEY))
    text = json.dumps([carried, name], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LegacyBridge:
    """The legacy children that serve one server's 2026-07-28 callers (module docstring)."""

    def __init__(self, name: str, spawn, shared: bool, session: type) -> None:
        """``session`` is the class of a bridged child (the app's ``LegacySession``)."""
        self.name = name
        self._spawn = spawn
        self._session = session
        self.shared = shared
        self.sessions: dict[tuple[str, str], Any] = {}
        self._reaper: gevent.Greenlet | None = None
        self._numbers = itertools.count(1)
        self.closed = False

    def session_for(self, principal: str, meta: Any) -> Any:
        """The child this caller's request goes to (made, not started, if new)."""
        key = ("", "") if self.shared else (principal, fingerprint(meta))
        session = self.sessions.get(key)
        if session is None or session.state in ("stopped", "crash loop"):
            if len(self.sessions) >= MAX_CHILDREN:
                self.reap(float("-inf"))
            if len(self.sessions) >= MAX_CHILDREN:
                raise ServerBusy(f"{self.name}: {MAX_CHILDREN} bridged servers are busy")
            meta = meta if isinstance(meta, dict) else {}
            label = self.name if self.shared else f"{self.name}#{next(self._numbers)}"
            session = self.sessions[key] = self._session(
                label, lambda: self._spawn(label), meta.get(CAPABILITIES_KEY) or {},
                meta.get(CLIENT_INFO_KEY))
            if not self.shared and self._reaper is None:
                self._reaper = greenlets.spawn(self._reap_loop, name=f"{self.name} reaper")
        return session

    def reap(self, older_than: float) -> None:
        """Stop the children nobody has used since ``older_than`` (a monotonic time)."""
        for key, session in list(self.sessions.items()):
            since = session.idle_since()
            if since is not None and since <= older_than:
                del self.sessions[key]
                logger.info("%s: stopped, unused for %.0f s", session.name,
                            time.monotonic() - since)
                session.close("unused")

    def _reap_loop(self) -> None:
        while not self.closed:
            gevent.sleep(min(IDLE / 2, 30.0))
            self.reap(time.monotonic() - IDLE)

    def running(self) -> int:
        return sum(1 for session in self.sessions.values() if session.child is not None)

    def close(self, reason: str) -> None:
        self.closed = True
        for session in list(self.sessions.values()):
            session.close(reason)
        self.sessions.clear()
        if self._reaper is not None:
            self._reaper.kill(block=False)
