"""Client sessions in server mode: the downstream link, its event streams, and the registry.

A session is the downstream end of one bridge. It spawns its own child on the first message
(so an idle stream costs no process) and stops it when the session ends. Everything a
session has queued for a slow client counts against one byte budget; a client that stops
reading long enough to exhaust it loses its session, never our memory.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Iterator

import gevent
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue

from mcp_proxy import jsonrpc
from mcp_proxy.child import StdioChild
from mcp_proxy.errors import LinkClosed, SpawnError
from mcp_proxy.jsonrpc import Message
from mcp_proxy.link import Link, bridge
from mcp_proxy.metrics import Metrics
from mcp_proxy.server.health import ServerHealth
from mcp_proxy.settings import ServerSettings, ServerSpec

logger = logging.getLogger(__name__)

_END = object()
PING = b": ping\n\n"


class StreamEnded(Exception):
    """The stream was ended: its response was sent, or its session closed."""


def sse_event(data: bytes, event: bytes = b"message") -> bytes:
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


class Stream:
    """One open event stream of a session: a queue drained by a streaming response."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.ended = False
        self._queue: Queue = Queue()

    def put(self, message: Message) -> None:
        self.session.charge(len(message.raw))
        self._queue.put(message)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._queue.put(_END)

    def next(self, timeout: float) -> Message | None:
        """The next message, or None after ``timeout``; raises StreamEnded once it ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except Empty:
            return None
        if item is _END:
            self._queue.put(_END)  # stay ended for any later reader
            raise StreamEnded
        self.session.refund(len(item.raw))
        return item

    def events(self, keepalive: float, until_response: bool = False) -> Iterator[bytes]:
        """SSE bytes: each message as an event, a ping comment after ``keepalive`` of silence;
        with ``until_response``, the stream stops after the first response it carries."""
        while True:
            try:
                message = self.next(keepalive)
            except StreamEnded:
                return
            if message is None:
                yield PING
                continue
            yield sse_event(message.raw)
            if until_response and message.kind == jsonrpc.RESPONSE:
                return


class Session(Link):
    """Downstream link of one client session; subclasses route what the child sends."""

    transport = "?"

    def __init__(self, registry: Registry, server_name: str) -> None:
        self.id = uuid.uuid4().hex
        super().__init__(f"{self.transport}:{self.id[:8]}")
        self.registry = registry
        self.server_name = server_name
        self.settings = registry.settings
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.child: StdioChild | None = None
        self._starting = Semaphore()  # two first messages at once must not start two children
        self._queued = 0

    def charge(self, size: int) -> None:
        """Count ``size`` queued bytes; close the session if the client is too far behind."""
        if self._queued + size > self.settings.max_queued and self._queued:
            logger.warning("%s: client is not reading (%d bytes queued); closing the session",
                           self.name, self._queued)
            self.close("client stopped reading (outbound buffer full)")
            raise LinkClosed(f"{self.name}: outbound buffer full")
        self._queued += size

    def refund(self, size: int) -> None:
        self._queued -= size

    def receive(self, message: Message) -> None:
        """Take a message from the client; start the child first if this is the first one."""
        self.last_activity = time.monotonic()
        if self.child is None:
            with self._starting:
                if self.child is None:
                    child = self.registry.spawn(self.server_name, self.name)
                    bridge(self, child)
                    self.child = child
        self.deliver(message)

    idle_limit = float("inf")

    def idle(self, now: float) -> float:
        """Seconds the session has been idle with nothing open; 0 while a stream keeps it."""
        return 0.0

    def _on_close(self, reason: str) -> None:
        logger.info("%s: session ended: %s", self.name, reason)
        self.registry.forget(self)


class Registry:
    """All live sessions of one app, by id; spawns children and reaps idle sessions."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.last_activity = time.time()
        self.spawned = 0
        self.health = {name: ServerHealth() for name in settings.servers}
        self.metrics = Metrics(lambda: self.sessions.values(), settings.servers)
        self._reaper = gevent.spawn(self._reap_idle)

    def spec(self, server_name: str) -> ServerSpec:
        return self.settings.servers[server_name]

    def spawn(self, server_name: str, session_name: str) -> StdioChild:
        """Start a child for a session of ``server_name``; record how it starts and ends."""
        try:
            child = self._start_child(server_name, session_name)
        except SpawnError as exc:
            self.health[server_name].spawn_failed(str(exc))
            self.metrics.spawn_failed(server_name)
            raise
        self.health[server_name].spawned()
        self.metrics.child_started(server_name)
        child.meter = self.metrics.relay_meter(server_name)  # the relay counts through it
        started = time.monotonic()  # a callback, not a greenlet per child: it must not block
        child.stopped.rawlink(lambda _: self._child_stopped(server_name, child, started))
        return child

    def _start_child(self, server_name: str, session_name: str) -> StdioChild:
        child = StdioChild(self.spec(server_name), session_name, self.settings.max_frame,
                           stop_grace=self.settings.stop_timeout / 3)
        self.spawned += 1
        return child

    def _child_stopped(self, server_name: str, child: StdioChild, started: float) -> None:
        """Record how a reaped child ended (for /readyz and /metrics)."""
        code = child.process.returncode
        self.health[server_name].exited(code, time.monotonic() - started)
        self.metrics.child_exited(server_name, code)

    def add(self, session: Session) -> Session:
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str, server_name: str, transport: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.server_name != server_name \
                or session.transport != transport:
            return None
        return session

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    def touch(self) -> None:
        self.last_activity = time.time()

    def close_all(self, reason: str, timeout: float) -> None:
        """End every session and wait (bounded) for every child to stop."""
        self._reaper.kill(block=False)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(reason)
        children = [s.child for s in sessions if s.child is not None]
        gevent.joinall([gevent.spawn(c.stopped.wait) for c in children], timeout=timeout)
        for child in children:  # past the deadline: no orphans, whatever they ignore
            if not child.stopped.is_set():
                child.kill_now()

    def signal_children(self) -> None:
        """SIGTERM every child's process group now, without waiting (for exit hooks)."""
        for session in list(self.sessions.values()):
            if session.child is not None:
                session.child.kill_now(signal.SIGTERM)

    def _reap_idle(self) -> None:
        settings = self.settings
        while True:
            gevent.sleep(min(settings.keepalive / 2, settings.session_idle_timeout / 4, 30.0))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.idle(now) > session.idle_limit:
                    session.close(f"idle for more than {session.idle_limit:g} s")

