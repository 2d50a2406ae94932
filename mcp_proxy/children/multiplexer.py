"""Multiplexer: one stdio child shared by many client sessions, each through its own Port.

It owns the child's life (start, handshake, restart with backoff, stop) and the proxy's own
requests to it; its routing is inherited from :class:`~mcp_proxy.children.fanin.FanIn`
(client -> child) and :class:`~mcp_proxy.children.fanout.FanOut` (child -> clients), and what
the sessions hold of the child (calls, ports, subscriptions) is kept by its
:class:`~mcp_proxy.children.sharing.Sharing`. It knows nothing of HTTP.

The only place that rewrites messages for sharing (DESIGN.md §3.1, SESSIONS.md §C):

- The child is initialized once, by the proxy, deterministically (the newest 2025 version, the
  proxy's own identity, no client capabilities); each client's ``initialize`` is answered from
  that cached result and ``notifications/initialized`` is not forwarded.
- Client requests get ids from one counter per child (the client's id, with its JSON type, is
  restored on the answer); ``_meta.progressToken`` becomes the child id and is restored on
  progress; ``notifications/cancelled`` is mapped, and only for the client's own requests.
- ``logging/setLevel`` is answered per client; the child gets the most verbose level any client
  asked for, and each client only the lines its level admits. ``resources/subscribe`` is
  reference-counted; ``resources/updated`` goes to the subscribers; other notifications
  (``list_changed``) go to every client.
- A server request (sampling, elicitation, roots) goes to the one client with requests in
  flight if it declared the capability; otherwise the child gets an error saying why.
- When the child dies, every request in flight gets an error at once; the child is started
  again with backoff (at most ``MAX_STARTS`` a minute), initialized again, and its
  subscriptions and log level are replayed. Sessions survive.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from mcp_proxy import __version__
from mcp_proxy.children.fanin import FanIn
from mcp_proxy.children.fanout import FanOut
from mcp_proxy.children.port import Port, more_verbose
from mcp_proxy.children.sharing import Sharing
from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.link import Link
from mcp_proxy.errors import ErrorAnswer, LinkClosed, ProxyError, SpawnError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "2025-11-25"  # what the proxy asks the shared child for
MAX_STARTS = 5  # a minute; past it the server is in a crash loop and is not started again
START_TIMEOUT = 60.0  # spawn to initialize answered (a uvx or npx server may download first)
_BACKOFF = (0.1, 0.5, 1.0, 2.0, 4.0)


class Multiplexer(FanIn, FanOut):
    """One shared child of a configured server; ``port()`` gives each session its link."""

    def __init__(self, name: str, spawn: Callable[[], Link],
                 capabilities: dict | None = None) -> None:
        self.name = name
        self._spawn = spawn
        self.capabilities = capabilities or {}
        self.child: Link | None = None
        self.sharing = Sharing()
        self.init_result: dict | None = None
        self.state = "idle"  # idle, starting, running, restarting, crash loop, stopped
        self.failure = ""
        self.refused = False  # the last start's handshake had an error answer
        self.starts: deque[float] = deque()
        self.level: str | None = None
        self._starting = Semaphore()

    # -- the child's life ----------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start and initialize the child unless it runs; raise SpawnError if it cannot."""
        if self.state == "running":
            return
        with self._starting:
            if self.state == "running":
                return
            if self.state == "stopped":
                raise SpawnError(f"{self.name}: the proxy is shutting down")
            now = time.monotonic()
            while self.starts and now - self.starts[0] > 60:
                self.starts.popleft()
            if len(self.starts) >= MAX_STARTS:
                self.state = "crash loop"
                raise SpawnError(f"{self.name}: the server is in a crash loop ({MAX_STARTS} "
                                 f"starts within a minute; last: {self.failure})")
            self.starts.append(now)
            self._start()

    def _start(self) -> None:
        self.state = "starting"
        try:
            child = self._spawn()
        except SpawnError as exc:
            self._failed(str(exc))
            raise
        self.child = child
        child.attach(self.route_outbound, lambda: self._child_ended(child))
        try:
            if self.state != "stopped":
                self._handshake(child)
            if self.state == "stopped":  # close() came while the child started: stop it too
                raise SpawnError(f"{self.name}: the proxy is shutting down")
        except SpawnError as exc:
            self._failed(str(exc))
            child.close(self.failure)
            raise
        except (ProxyError, gevent.Timeout) as exc:
            self.refused = isinstance(exc, ErrorAnswer)  # e.g. a 2026-07-28-only server's
            self._failed(f"{self.opening} failed: {exc}")
            child.close(self.failure)
            raise SpawnError(f"{self.name}: {self.failure}") from None
        self.state = "running"
        logger.info("%s: shared server ready (%d client(s))", self.name, len(self.sharing.ports))
        self._tell_ports(True, "")

    def _failed(self, failure: str) -> None:
        """A start failed: the next need may try again, unless the proxy is stopping."""
        self.failure = failure
        if self.state != "stopped":
            self.state = "idle"

    opening = "initialize"
    restarts = True  # start a dead child again at once for the sessions still here

    def _handshake(self, child: Link) -> None:
        """Initialize the child once, as the proxy; replay the level and subscriptions."""
        self.init_result = self._request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": self.capabilities,
            "clientInfo": {"name": "mcp-proxy", "version": __version__}}, START_TIMEOUT)
        child.send(Message({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        if self.level:
            self._request("logging/setLevel", {"level": self.level}, START_TIMEOUT)
        for uri in self.sharing.subscribed:
            self._request("resources/subscribe", {"uri": uri}, START_TIMEOUT)

    def _child_ended(self, child: Link) -> None:
        if child is not self.child:
            return
        self.child = None
        reason = child.close_reason or "server process exited"
        self.failure = reason
        for call in self.sharing.end_calls().values():
            if call.waiter is not None:
                call.waiter.set_exception(LinkClosed(reason))
            elif call.port is not None:
                call.port.inflight.pop(id_key(call.original), None)
                call.port.deliver_if_open(jsonrpc.error_message(
                    call.original, jsonrpc.INTERNAL_ERROR, f"MCP server process exited: {reason}"))
        ports = self.sharing.ports
        for port in ports:
            port.server_requests.clear()
        self._tell_ports(False, reason)
        if self.state == "stopped":
            return
        self.state = "restarting" if ports and self.restarts else "idle"
        logger.warning("%s: shared server ended (%s)", self.name, reason)
        if self.state == "restarting":
            greenlets.spawn(self._restart, name=f"{self.name} restart")

    def _tell_ports(self, running: bool, reason: str) -> None:
        """The ports that asked to know (a combined server's members) learn the child's state."""
        for port in list(self.sharing.ports):
            told = getattr(port, "on_child", None)  # the lane's request ports never ask
            if told is not None:
                told(running, reason)

    def _restart(self) -> None:
        """Start the child again for the sessions still here, with backoff; give up in a loop."""
        for delay in _BACKOFF * 2:
            gevent.sleep(delay)
            if not self.sharing.ports or self.state in ("running", "stopped"):
                return
            try:
                self.ensure_started()
                logger.info("%s: shared server restarted", self.name)
                return
            except SpawnError as exc:
                logger.error("%s: %s", self.name, exc)
                if self.state == "crash loop":
                    return

    def close(self, reason: str) -> None:
        """Stop for good (proxy shutdown): the ports close, the child is stopped."""
        self.state = "stopped"
        for port in list(self.sharing.ports):
            port.close(reason)
        if self.child is not None:
            self.child.close(reason)

    # -- clients -------------------------------------------------------------------------

    def port(self, name: str) -> Port:
        """A new session's port on this child."""
        return self.admit(Port(self, name))

    def admit(self, port: Port) -> Port:
        """Count ``port`` (made here, or a subclass made by its user) among the clients."""
        self.sharing.join(port)
        return port

    def release(self, port: Port) -> None:
        """A client session ended: cancel its work, drop its subscriptions and level."""
        sharing = self.sharing
        sharing.leave(port)
        for cid in port.inflight.values():
            if sharing.close_call(cid) is not None:
                self._notify("notifications/cancelled",
                             {"requestId": cid, "reason": "the client session ended"})
        for uri in port.subscriptions:
            if sharing.drop_subscription(uri):
                self.background("resources/unsubscribe", {"uri": uri})
        self.sync_level()

    # -- to the child --------------------------------------------------------------------

    def send(self, message: Message) -> None:
        child = self.child
        if child is None:
            raise LinkClosed(f"{self.name}: the server is not running ({self.failure})")
        child.send(message)

    def _notify(self, method: str, params: dict) -> None:
        try:
            self.send(Message({"jsonrpc": "2.0", "method": method, "params": params}))
        except LinkClosed:
            pass

    def _request(self, method: str, params: dict, timeout: float) -> dict:
        """A request of the proxy's own; its answer's result, or ProxyError."""
        child = self.child
        if child is None:
            raise LinkClosed(f"{self.name}: the server is not running")
        waiter = AsyncResult()
        cid = self.sharing.open_call(None, None, waiter=waiter)
        try:
            child.send(Message({"jsonrpc": "2.0", "id": cid, "method": method,
                                "params": params}))
            answer = waiter.get(timeout=timeout)
        except gevent.Timeout:
            raise ProxyError(f"no answer to {method} within {timeout:g} s") from None
        finally:
            self.sharing.close_call(cid)  # answered, failed to send, or given up on
        if "error" in answer.obj:
            raise ErrorAnswer(f"{method}: {answer.obj['error'].get('message')}")
        return answer.obj.get("result") or {}

    def background(self, method: str, params: dict) -> None:
        """A request of the proxy's own whose answer nobody waits for (logged if it fails)."""
        if self.state != "running":
            return  # replayed when the child starts

        def run() -> None:
            try:
                self._request(method, params, START_TIMEOUT)
            except (ProxyError, LinkClosed) as exc:
                logger.warning("%s: %s failed: %s", self.name, method, exc)

        greenlets.spawn(run, name=f"{self.name} {method}")

    def sync_level(self) -> None:
        """Give the child the most verbose level any client asked for."""
        level = more_verbose(port.level for port in self.sharing.ports)
        if level is not None and level != self.level:
            self.level = level
            self.background("logging/setLevel", {"level": level})


