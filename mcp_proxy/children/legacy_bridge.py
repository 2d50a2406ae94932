"""Which legacy child serves a 2026-07-28 request to a legacy-only server: the bridge's pool.

Owns the bridged children of one configured server (``legacy_adapter.py``'s
``LegacySession``, which translates; this module only picks, starts lazily and reaps):

- a **shared** server (``--shared-child``, ``--stateless``, ``"shared": true``) has one
  legacy child for every modern caller, multiplexed;
- a **per-session** server has one legacy child per (caller, capability fingerprint): the
  caller is the principal of its credentials (``request_state.principal``), the fingerprint
  a digest of the capabilities and client name the child is initialized with, since servers
  gate what they offer on them. When those capabilities include sampling, elicitation or
  roots, a child is **leased** to one request and its ``input_required`` rounds at a time
  (``parking.py``), so a caller's concurrent requests get a small pool of such children;
  a retry goes to the child that made its ``requestState``. A child nobody has used for
  ``IDLE`` seconds is stopped; at most ``MAX_CHILDREN`` run at once (the idle ones are
  stopped first to make room, else the request is refused as busy).

A shared child is never told of sampling, elicitation or roots: it cannot be leased. What
the bridge calls a child is whatever ``spawn`` makes (``era_choice.py`` picks it): a child
process, a remote session of a remote server, or a ``Combiner`` in front of a combined
server's members.
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
# client capabilities whose server requests become input_required rounds: a child told of
# them is leased to one request at a time, which a shared child cannot be; it is not told
ROUND_CAPABILITIES = ("sampling", "elicitation", "roots")
FINGERPRINTS_KEPT = 256  # digests remembered, by the repr of what they digest
FINGERPRINT_KEY_KEPT = 4096  # a longer capabilities repr is digested each time
_fingerprints: dict[str, str] = {}


def carried_capabilities(capabilities: Any, shared: bool) -> dict:
    """The client capabilities a child is initialized with: a shared one gets none of
    :data:`ROUND_CAPABILITIES`."""
    if not isinstance(capabilities, dict):
        return {}
    return {key: value for key, value in capabilities.items()
            if not shared or key not in ROUND_CAPABILITIES}


def fingerprint(carried: dict, meta: dict) -> str:
    """A digest of what a child is initialized with for this request's ``_meta``."""
    info = meta.get(CLIENT_INFO_KEY)
    name = info.get("name") if isinstance(info, dict) else None
    # a caller sends the same capabilities on every request: their repr (exact for parsed
    # JSON, cheap) finds the digest made once, not a sorted dumps and a sha256 per request
    key = repr((carried, name))
    found = _fingerprints.get(key)
    if found is None:
        text = json.dumps([carried, name], sort_keys=True, separators=(",", ":"), default=str)
        found = hashlib.sha256(text.encode()).hexdigest()[:16]
        if len(key) > FINGERPRINT_KEY_KEPT:  # kept, 256 such could pin a body's size each
            return found
        if len(_fingerprints) >= FINGERPRINTS_KEPT:  # made-up capabilities: the oldest go
            del _fingerprints[next(iter(_fingerprints))]
        _fingerprints[key] = found
    return found


class LegacyBridge:
    """The legacy children that serve one server's 2026-07-28 callers (module docstring)."""

    def __init__(self, name: str, spawn, shared: bool, session: type) -> None:
        """``session`` is the class of a bridged child (the app's ``LegacySession``)."""
        self.name = name
        self._spawn = spawn
        self._session = session
        self.shared = shared
        self.sessions: dict[tuple[str, str], list] = {}
        self._reaper: gevent.Greenlet | None = None
        self._numbers = itertools.count(1)
        self.closed = False

    def session_for(self, principal: str, meta: Any, handle: Any = None) -> Any:
        """The child this caller's request goes to (made, not started, if new): the one
        that made ``handle``, else one not leased to another request."""
        meta = meta if isinstance(meta, dict) else {}
        carried = carried_capabilities(meta.get(CAPABILITIES_KEY), self.shared)
        key = ("", "") if self.shared else (principal, fingerprint(carried, meta))
        pool = self.sessions.setdefault(key, [])
        pool[:] = [s for s in pool if s.state not in ("stopped", "crash loop")]
        if handle is not None:  # a retry: to its child, which refuses a handle not its own
            owner = next((s for s in pool if s.owns(handle)), pool[0] if pool else None)
            if owner is not None:
                return owner
        session = next((s for s in pool if not s.leased()), None)
        if session is None:
            if self.running() >= MAX_CHILDREN:
                self.reap(float("-inf"))
            if self.running() >= MAX_CHILDREN:
                raise ServerBusy(f"{self.name}: {MAX_CHILDREN} bridged servers are busy")
            label = self.name if self.shared else f"{self.name}#{next(self._numbers)}"
            session = self._session(label, lambda: self._spawn(label), carried,
                                    meta.get(CLIENT_INFO_KEY))
            pool.append(session)
            if not self.shared and self._reaper is None:
                self._reaper = greenlets.spawn(self._reap_loop, name=f"{self.name} reaper")
        session.reserve()
        return session

    def reap(self, older_than: float) -> None:
        """Stop the children nobody has used since ``older_than`` (a monotonic time)."""
        for key, pool in list(self.sessions.items()):
            for session in list(pool):
                since = session.idle_since()
                if since is not None and since <= older_than:
                    pool.remove(session)
                    logger.info("%s: stopped, unused for %.0f s", session.name,
                                time.monotonic() - since)
                    session.close("unused")
            if not pool:
                del self.sessions[key]

    def _reap_loop(self) -> None:
        while not self.closed:
            gevent.sleep(min(IDLE / 2, 30.0))
            self.reap(time.monotonic() - IDLE)

    def running(self) -> int:
        """How many bridged children there are (started, or about to be)."""
        return sum(len(pool) for pool in self.sessions.values())

    def close(self, reason: str) -> None:
        self.closed = True
        for pool in list(self.sessions.values()):
            for session in pool:
                session.close(reason)
        self.sessions.clear()
        if self._reaper is not None:
            self._reaper.kill(block=False)
