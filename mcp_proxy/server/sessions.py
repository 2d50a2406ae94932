"""Client sessions in server mode: the downstream link and the registry of live sessions.

This module owns a session's life and the registry: the live sessions by id, their limits,
and the reaper of idle and stalled ones. Which stream a message goes down is its transport's
(sse_transport.py, streamable_session.py); a session never speaks HTTP.

A session is the downstream end of one bridge. It gets its upstream (its own child, or a port
of a shared one) on the first message, so an idle stream costs no process, and lets it go
when the session ends. What a session
holds for a slow client is bounded: past a small high-water mark of bytes on their way to a
reading client, the session is not ``ready`` and its child's stdout is not read (the child
blocks on its own writes); a client that takes nothing for ``--stall-timeout`` loses its
session; a backlog nobody reads is capped by ``--max-queued-size``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from mcp_proxy.children.supervisor import Supervisor
from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core import greenlets
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link, bridge
from mcp_proxy.errors import ServerRemoved, TooManySessions
from mcp_proxy.server.caller import caller_of
from mcp_proxy.server.metrics import Metrics
from mcp_proxy.server.streams import Stream, StreamOwner
from mcp_proxy.server.tool_scopes import ScopeGate, ToolScopes

logger = logging.getLogger(__name__)

# Backpressure marks: above HIGH bytes on their way to a reading client, the child's stdout
# is no longer read; below LOW it is read again.
HIGH_WATER = 512 << 10
LOW_WATER = 128 << 10
# a session id with --redis-url: the owning worker's tag, then 32 hex digits (scaleout/router.py)
TAGGED_ID = re.compile(r"[0-9a-z]{8}[0-9a-f]{32}\Z")


class Session(StreamOwner, Link):
    """Downstream link of one client session; subclasses route what the child sends."""

    transport = "?"
    caller = "?"  # who opened it (audit.py's caller_of), set by its transport
    principal = ""  # whose it is (the guard's caller, "" without keys): nobody else finds it
    gate: ScopeGate | None = None  # with "toolScopes": which tools its caller sees and calls

    def __init__(self, registry: Registry, server_name: str) -> None:
        self.id = registry.new_session_id()
        # named by its id's random end: with --redis-url the start is the worker's tag
        super().__init__(f"{self.transport}:{self.id[-8:]}")
        self.registry = registry
        self.server_name = server_name
        self.settings = registry.settings
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.upstream: Link | None = None  # its own child, or a port of a shared one
        self._starting = Semaphore()  # two first messages at once must not get two upstreams
        self.queued = 0  # bytes waiting in this session's streams
        self.pressing = 0  # of those, bytes in streams a response is draining
        self.draining: set[Stream] = set()  # streams an HTTP response is writing out
        self.ready = Event()
        self.ready.set()
        rules = registry.tool_scopes.get(server_name)
        if rules is not None:  # "toolScopes": this caller's answers pass its gate
            self.gate = ScopeGate(rules)
            self.send = self.gate.gated(self.send)

    def press(self, delta: int) -> None:
        """Move the bytes on their way to a reading client; flip ``ready`` at the marks."""
        self.pressing += delta
        if self.pressing >= HIGH_WATER:
            self.ready.clear()
        elif self.pressing <= LOW_WATER and not self.ready.is_set():
            self.ready.set()

    def deliver(self, message: Message) -> None:
        """Hand on what the HTTP client posted to the bridge; with the first message, get
        the upstream (its own child, or a port of a shared one) and bridge to it first."""
        self.last_activity = time.monotonic()
        if self.upstream is None:
            with self._starting:
                if self.upstream is None:
                    upstream = self.registry.supervisor.upstream(self.server_name, self.name)
                    meter = getattr(upstream, "meter", None)
                    if meter is not None:  # who calls, for an audit (audit.py)
                        meter.watch(self, self.id, self.caller)
                    bridge(self, upstream)
                    self.upstream = upstream
        Link.deliver(self, message)  # not super(): no super object per message

    def context(self) -> dict:
        """The ``session`` and ``server`` of a log line about it (``--log-format json``)."""
        return {"session": self.id, "server": self.server_name or "default"}

    idle_limit = float("inf")

    def idle(self, now: float) -> float:
        """Seconds the session has been idle with nothing open; 0 while a stream keeps it."""
        return 0.0

    ephemeral = False  # one request's session (--stateless): ends unremarked

    def _on_close(self, reason: str) -> None:
        logger.log(logging.DEBUG if self.ephemeral else logging.INFO,
                   "%s: session ended: %s", self.name, reason, extra=self.context())
        self.ready.set()  # a child waiting to be read must see the end, not wait forever
        self.registry.forget(self)


class Registry:
    """All live sessions of one app, by id; caps their number and reaps idle ones."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.last_activity = time.time()
        self.metrics = Metrics(lambda: self.sessions.values(), settings.servers)
        self.requests: set = set()  # 2026-07-28 requests being answered (request_port.py)
        # the app builds it with the classes it starts (app.py); a bare registry has none
        self.supervisor: Supervisor | None = None
        self._per_server: dict[str, int] = dict.fromkeys(settings.servers, 0)
        self._reaper = self._start_reaper()
        self.reloads = None  # with --named-server-config: what SIGHUP did (server/reload.py)
        self.router = None  # with --redis-url: which worker serves what (scaleout/router.py)
        # (path, method) -> the handler of a session request, for forwarded ones
        self.handlers: dict[tuple[str, str], Callable[[dict], Any]] = {}
        # the servers with "toolScopes" (they need OAuth tokens: flag_settings.py checked)
        self.tool_scopes = {name: ToolScopes(spec, settings.oauth)
                            for name, spec in settings.servers.items()
                            if spec.tool_scopes and settings.oauth is not None}

    def caller_of(self, environ: dict) -> str:
        """Who sent this request, as an audit line names them (caller.py)."""
        if not self.metrics.audited:  # nobody asks: no digest to make
            return "?"
        return caller_of(environ, self.settings.auth_required)

    def principal_of(self, environ: dict) -> str:
        """The caller a request names (the guard's ``mcp_proxy.auth``; "" without keys)."""
        return environ.get("mcp_proxy.auth", "") if self.settings.auth_required else ""

    def new_session_id(self) -> str:
        """A new session's id: 32 hex digits, after this worker's tag with --redis-url."""
        hex_id = uuid.uuid4().hex
        return hex_id if self.router is None else self.router.new_session_id(hex_id)

    def _start_reaper(self) -> gevent.Greenlet:
        # a reaper that crashed is logged and started again: idle sessions must still end
        return greenlets.spawn(self._reap_idle, name="session reaper",
                               on_error=lambda exc: setattr(self, "_reaper",
                                                            self._start_reaper()))

    def add(self, session: Session) -> Session:
        """Register a new session; raise TooManySessions past ``--max-sessions`` (or the
        server's own ``maxSessions``)."""
        name = session.server_name
        spec = self.settings.servers.get(name)
        if spec is None:  # a request that raced the reload which took its server out
            raise ServerRemoved(f"server {name!r} was taken out of the config")
        limit = spec.max_sessions
        if len(self.sessions) >= self.settings.max_sessions:
            raise TooManySessions(f"this proxy holds its limit of {self.settings.max_sessions} "
                                  f"sessions (--max-sessions)")
        if limit is not None and self._per_server[name] >= limit:
            raise TooManySessions(f"server {name or 'default'!r} holds its limit of {limit} "
                                  f"sessions (maxSessions)")
        self.sessions[session.id] = session
        self._per_server[name] = self._per_server.get(name, 0) + 1
        return session

    def get(self, session_id: str, server_name: str, transport: str,
            environ: dict) -> Session | None:
        """The live session of that id, server and transport, if it is the caller's own:
        another caller's is not found, exactly as an unknown one."""
        session = self.sessions.get(session_id)
        if session is None or session.server_name != server_name \
                or session.transport != transport:
            return None
        if session.principal and session.principal != self.principal_of(environ):
            logger.warning("%s: refused to %s from %s: the session is another caller's",
                           session.name, self.principal_of(environ) or "no key",
                           environ.get("REMOTE_ADDR") or
                           f"worker:{environ.get('mcp_proxy.forwarded', '?')}",
                           extra=session.context())
            return None
        return session

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self._per_server[session.server_name] -= 1

    def end_sessions_of(self, callers: set[str]) -> None:
        """End the sessions of these callers (their keys were taken away)."""
        for session in list(self.sessions.values()):
            if session.principal in callers:
                session.close(f"its key ({session.principal}) was taken out of the key file")

    def touch(self) -> None:
        self.last_activity = time.time()

    def close_all(self, reason: str, timeout: float) -> None:
        """End every session and wait (bounded) for every child to stop."""
        self._reaper.kill(block=False)
        for session in list(self.sessions.values()):
            session.close(reason)
        self.supervisor.stop_all(reason, timeout)
        if self.router is not None:
            self.router.stop()

    def _reap_idle(self) -> None:
        """End idle sessions, and sessions and modern requests whose client stopped taking
        what we send."""
        settings = self.settings
        while True:
            gevent.sleep(min(settings.keepalive / 2, settings.session_idle_timeout / 4,
                             settings.stall_timeout / 4, 30.0))
            now = time.monotonic()
            for session in [*self.sessions.values(), *self.requests]:
                stalled = session.stalled(now)
                if stalled is not None:
                    logger.warning("%s: the client took nothing for %g s (%d bytes waiting); "
                                   "closing it", session.name,
                                   settings.stall_timeout, session.queued,
                                   extra=session.context() if isinstance(session, Session)
                                   else None)
                    session.close(f"client read nothing for {settings.stall_timeout:g} s")
                    if stalled.abort is not None:
                        stalled.abort()  # its response is stuck in a write: cut it
                elif session.idle(now) > session.idle_limit:
                    session.close(f"idle for more than {session.idle_limit:g} s")

