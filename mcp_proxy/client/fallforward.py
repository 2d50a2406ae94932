"""FallForward: a 2025-era desktop client in front of a remote that speaks only 2026-07-28.

A link that wraps the Streamable HTTP upstream (SESSIONS.md §A.6 (2a)). Until the remote
turns out to be modern-only it relays as is, so a 2025-era or dual-era remote costs nothing
extra: the client's ``initialize`` goes first. When that fails and a ``server/discover``
probe succeeds (or at once with ``--protocol-era modern``), it bridges:

- ``initialize`` is answered from the DiscoverResult; ``ping``, ``logging/setLevel`` and
  ``resources/(un)subscribe`` are answered ``{}`` here (the last three change what later
  requests carry); ``notifications/initialized`` and ``roots/list_changed`` end here;
- every request is stamped with the ``_meta`` envelope (the client's capabilities and info
  from its ``initialize``, its log level) and runs in its own greenlet: ``input_required``
  rounds are asked of the client and retried (rounds.py), ``resultType: "complete"`` is
  stripped, a stdio cancel closes the current leg's response;
- change notifications come from one ``subscriptions/listen`` held here (listener.py).

Modern and dual-era desktop clients never need it: their requests pass straight through.
It owns the bridged session's state (legs and asks in flight); the wire is the upstream's.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from mcp_proxy import __version__
from mcp_proxy.client.listener import Listener
from mcp_proxy.client.rounds import drive
from mcp_proxy.core import era_headers, jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.link import Link
from mcp_proxy.core.protocol import (
    CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LEGACY_VERSIONS,
    LOG_LEVEL_KEY,
    SERVER_INFO_KEY,
    VERSION_KEY,
)
from mcp_proxy.errors import CannotCarry, FallbackNeeded, LinkClosed
from mcp_proxy.upstream.remote_link import AUTH_FAILED
from mcp_proxy.upstream.streamable_remote import StreamableUpstream

logger = logging.getLogger(__name__)

LOCAL = ("ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe")
DROPPED = ("notifications/initialized", "notifications/roots/list_changed")


class FallForward(Link):
    """The remote as the desktop client sees it (see the module docstring)."""

    def __init__(self, inner: StreamableUpstream, era: str = "auto") -> None:
        super().__init__("remote")
        self.inner, self.era = inner, era
        self.settings = inner.settings
        self.bridging = False
        self.discovered: dict = {}
        self.version = ""  # the 2026-07-28-era version spoken to the remote
        self.client: dict = {}  # the client's initialize params
        self.log_level: str | None = None
        self.uris: set[str] = set()
        self.legs: dict[tuple, AsyncResult] = {}  # our requests to the remote
        self.asks: dict[tuple, AsyncResult] = {}  # our requests to the desktop client
        self.calls: dict[tuple, gevent.Greenlet] = {}  # client request -> its driver
        self.decided = Event()  # clear while the remote's era is being found out
        self.decided.set()
        self._pending_init: Message | None = None
        self._ids = itertools.count(1)
        self.listener = Listener(self)
        inner.attach(self._deliver_remote, lambda: self.close(inner.close_reason))

    def next_id(self, kind: str) -> str:
        return f"mcp-proxy-{kind}-{next(self._ids)}"

    # --- desktop client -> remote ---------------------------------------------------------

    def send_first(self, message: Message) -> None:
        """The client's first message, letting FallbackNeeded (no Streamable HTTP) through."""
        if message.method == "initialize" and self.era == "modern":
            self.send(message)
            return
        if message.method == "initialize":
            self._pending_init = message
            self.decided.clear()
        try:
            self.inner.send_first(message)
        except FallbackNeeded:
            self._pending_init = None
            self.decided.set()
            raise

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        if message.method != "initialize" or self.bridging:
            if not self.decided.wait(self.settings.read_timeout):
                raise LinkClosed("the remote's protocol era is still unknown")
        if self.bridging:
            self._bridged(message)
        elif message.method == "initialize" and self.era == "modern":
            self.decided.clear()
            spawn(self._engage, message, None, name="fall-forward: discover",
                  on_error=closing(self))
        else:
            if message.method == "initialize" and self.era == "auto":
                self._pending_init = message
                self.decided.clear()
            self.inner.send(message)

    def _bridged(self, message: Message) -> None:
        kind, method = message.kind, message.method
        if kind == jsonrpc.RESPONSE:
            waiter = self.asks.get(id_key(message.id))
            if waiter is not None:
                waiter.set(message)
            else:
                logger.warning("%s: the client answered %r, which nobody asked", self.name,
                               message.id)
        elif kind == jsonrpc.NOTIFICATION:
            if method == "notifications/cancelled":
                self._cancel(message.params.get("requestId"))
            elif method in DROPPED:
                logger.debug("%s: %s ends here (no such thing in 2026-07-28)", self.name, method)
            else:
                self.inner.send(message)
        elif method == "initialize":
            self.deliver_unless_closed(jsonrpc.result_message(
                message.id, self._initialize_result(message)))
        elif method in LOCAL:
            self._local(message)
        else:
            key = id_key(message.id)
            self.calls[key] = spawn(self._drive, message, name=f"fall-forward: {method}",
                                    on_error=closing(self))

    def _local(self, message: Message) -> None:
        params = message.obj.get("params") or {}
        if message.method == "logging/setLevel":
            self.log_level = params.get("level") if isinstance(params.get("level"), str) \
                else None
        elif message.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if isinstance(uri, str):
                (self.uris.add if message.method == "resources/subscribe"
                 else self.uris.discard)(uri)
                self.listener.refilter()
        self.deliver_unless_closed(jsonrpc.result_message(message.id, {}))

    def _cancel(self, request_id: Any) -> None:
        driver = self.calls.pop(id_key(request_id), None)
        if driver is not None:
            logger.info("%s: request %r cancelled by the client", self.name, request_id)
            driver.kill(block=False)

    def _drive(self, message: Message) -> None:
        try:
            answer = drive(self, message)
        except CannotCarry as exc:
            answer = jsonrpc.error_message(message.id, exc.code, str(exc), exc.data)
        finally:
            self.calls.pop(id_key(message.id), None)
        self.deliver_unless_closed(answer)

    # --- the 2026-07-28 remote ------------------------------------------------------------

    def envelope(self, meta: Any = None) -> dict:
        """The ``_meta`` a request carries: the client's identity, its level, and what it
        already had (a progress token; a protocol version of its own is kept)."""
        stamp = {VERSION_KEY: self.version,
                 CAPABILITIES_KEY: self.client.get("capabilities") or {},
                 CLIENT_INFO_KEY: self.client.get("clientInfo")
                 or {"name": "mcp-proxy", "version": __version__}}
        if self.log_level:
            stamp[LOG_LEVEL_KEY] = self.log_level
        return {**stamp, **(meta if isinstance(meta, dict) else {})}

    def leg(self, method: str, params: dict, leg_id: str | None = None) -> Message | None:
        """Send one request to the remote and wait for its answer (None: it was stopped)."""
        leg_id = leg_id or self.next_id("leg")
        waiter = self.legs[id_key(leg_id)] = AsyncResult()
        params = {**params, "_meta": self.envelope(params.get("_meta"))}
        try:
            self.inner.send(Message({"jsonrpc": "2.0", "id": leg_id, "method": method,
                                     "params": params}))
            return waiter.get()
        finally:
            if self.legs.pop(id_key(leg_id), None) is not None and not waiter.ready():
                self.inner.stop_request(leg_id)  # killed while waiting: close its response

    def stop_leg(self, leg_id: str) -> None:
        waiter = self.legs.pop(id_key(leg_id), None)
        self.inner.stop_request(leg_id)
        if waiter is not None and not waiter.ready():
            waiter.set(None)

    def _deliver_remote(self, message: Message) -> None:
        """What the upstream delivered: a leg's answer wakes its waiter, the first initialize's
        decides the era, the listener takes its notifications; the rest goes to the client."""
        if message.kind == jsonrpc.RESPONSE:
            waiter = self.legs.get(id_key(message.id))
            if waiter is not None:
                waiter.set(message)
                return
            pending = self._pending_init
            if pending is not None and message.id == pending.id:
                self._pending_init = None
                if message.error is not None and message.error.get("data") != AUTH_FAILED:
                    spawn(self._engage, pending, message, name="fall-forward: discover",
                          on_error=closing(self))
                    return
                self.decided.set()
        elif self.bridging and message.kind == jsonrpc.NOTIFICATION \
                and self.listener.consume(message):
            return
        self.deliver_unless_closed(message)

    def _engage(self, init: Message, refusal: Message | None) -> None:
        """Find out whether the remote speaks 2026-07-28; if so, answer ``initialize``."""
        try:
            self.client = init.obj.get("params") or {}
            self.version = era_headers.MODERN_VERSION
            answer = self.leg("server/discover", {}, self.next_id("discover"))
            data = (answer.error or {}).get("data") if answer is not None else None
            offered = era_headers.modern_version(data) if isinstance(data, dict) else None
            if offered is not None and offered != self.version:  # a newer era: ask in its own
                self.version = offered
                answer = self.leg("server/discover", {}, self.next_id("discover"))
            result = answer.obj.get("result") if answer is not None else None
            version = era_headers.modern_version(result) if isinstance(result, dict) else None
            if version is None:
                logger.info("%s: server/discover found no 2026-07-28 server (%s)", self.name,
                            (answer.error if answer is not None else None) or "no versions")
                self.deliver_unless_closed(refusal or jsonrpc.error_message(
                    init.id, jsonrpc.INTERNAL_ERROR,
                    "the remote does not answer server/discover (--protocol-era modern)"))
                return
            self.discovered, self.version, self.bridging = result, version, True
            logger.info("%s: the remote speaks only %s: bridging the client's 2025-era "
                        "session to it", self.name, version)
            self.deliver_unless_closed(jsonrpc.result_message(init.id,
                                                              self._initialize_result(init)))
            self.listener.start()
        finally:
            self.decided.set()

    def _initialize_result(self, init: Message) -> dict:
        self.client = init.obj.get("params") or {}
        asked = self.client.get("protocolVersion")
        found = self.discovered
        meta = found.get("_meta") if isinstance(found.get("_meta"), dict) else {}
        result = {"protocolVersion": asked if asked in LEGACY_VERSIONS
                  else LEGACY_VERSIONS[0],
                  # logging: setLevel is answered here, and stamped on later requests
                  "capabilities": {"logging": {}, **(found.get("capabilities") or {})},
                  "serverInfo": meta.get(SERVER_INFO_KEY) or found.get("serverInfo")
                  or {"name": "remote", "version": "unknown"}}
        if isinstance(found.get("instructions"), str):
            result["instructions"] = found["instructions"]
        return result

    # --- to the desktop client, and closing -----------------------------------------------

    def deliver_unless_closed(self, message: Message) -> None:
        try:
            self.deliver(message)
        except LinkClosed:
            pass

    def ask_client(self, method: str, params: Any) -> tuple[str, AsyncResult]:
        ask_id = self.next_id("in")
        waiter = self.asks[id_key(ask_id)] = AsyncResult()
        request = {"jsonrpc": "2.0", "id": ask_id, "method": method}
        if params is not None:
            request["params"] = params
        self.deliver_unless_closed(Message(request))
        return ask_id, waiter

    def forget_asks(self, ask_ids: list[str], cancel: bool) -> None:
        for ask_id in ask_ids:
            waiter = self.asks.pop(id_key(ask_id), None)
            if cancel and waiter is not None and not waiter.ready():
                self.deliver_unless_closed(Message({"jsonrpc": "2.0",
                                                    "method": "notifications/cancelled",
                                                    "params": {"requestId": ask_id}}))

    def _on_close(self, reason: str) -> None:
        self.decided.set()
        self.listener.stop()
        for driver in list(self.calls.values()):
            driver.kill(block=False)
        for waiter in list(self.legs.values()):  # e.g. the discover probe: it waits no more
            if not waiter.ready():
                waiter.set(None)
        self.inner.close(reason)
