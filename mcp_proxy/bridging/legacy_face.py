"""LegacyFace: what a 2025-era client sees of a peer that speaks only 2026-07-28.

The era bridge both modes use (SESSIONS.md §A.5, §A.6 (2a)): client mode's ``FallForward``
in front of a remote, server mode's ``ModernChildAsLegacy`` in front of a child. Once the
peer is known to be modern-only (``discover``), the session is bridged:

- ``initialize`` is answered from the DiscoverResult; ``ping``, ``logging/setLevel`` and
  ``resources/(un)subscribe`` are answered ``{}`` here (the last three change what later
  requests carry); ``notifications/initialized`` and ``roots/list_changed`` end here;
- every request is stamped with the ``_meta`` envelope (the client's capabilities and info
  from its ``initialize``, its log level) and sent from the caller's greenlet; a final
  answer goes back from the greenlet that read it, ``resultType: "complete"`` stripped, and
  only ``input_required`` rounds, asked of the client and retried, get a greenlet of their
  own (rounds.py); a cancel stops the current leg (``stop_peer``);
- change notifications come from one ``subscriptions/listen`` held here (listener.py).

A subclass says how a message reaches the peer (``send_peer``), how a request to it is
stopped (``stop_peer``), and hands what the peer sends to ``consumes`` first. It owns
the bridged session's state (legs and asks in flight); the wire is the subclass's.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import gevent
from gevent.event import AsyncResult

from mcp_proxy import __version__
from mcp_proxy.bridging import rounds
from mcp_proxy.bridging.listener import Listener
from mcp_proxy.core import era_headers, jsonrpc
from mcp_proxy.core.greenlets import Task, closing, current_task, spawn
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
from mcp_proxy.errors import CannotCarry, LinkClosed, ServerBusy

logger = logging.getLogger(__name__)

LOCAL = ("ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe")
DROPPED = ("notifications/initialized", "notifications/roots/list_changed")
SUBSCRIBE_WAIT = 5.0  # for the listen that carries a new subscription
MAX_STOPPED = 256  # stopped legs remembered: a late answer to one is no surprise


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


class LegacyFace(Link):
    """A 2025-era session on a 2026-07-28 peer (see the module docstring)."""

    peer = "remote"  # what log lines and errors call the peer
    ask_timeout = 600.0  # how long the client may take to answer one input request
    discover_timeout: float | None = None  # None: the wire bounds it

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.bridging = False
        self.discovered: dict = {}
        self.version = ""  # the 2026-07-28-era version spoken to the peer
        self.client: dict = {}  # the client's initialize params
        self.log_level: str | None = None
        self.uris: set[str] = set()
        self.legs: dict[tuple, AsyncResult] = {}  # our requests to the peer
        self.asks: dict[tuple, AsyncResult] = {}  # our requests to the client
        self.stopped: dict[tuple, None] = {}  # legs stopped lately, oldest first
        self.calls: dict[tuple, Task | rounds.FirstLeg] = {}  # client request -> its driver
        self._stamp: tuple = (None, None, None, {})  # what the envelope was made of, and it
        self._ids = itertools.count(1)
        self.listener = Listener(self)

    def send_peer(self, message: Message, here: bool = False) -> None:
        """Send ``message`` to the peer. ``here``: the caller is a greenlet of this one
        request (its driver), which may carry the exchange itself instead of handing it to
        a greenlet of its own (in client mode: one greenlet less per call)."""
        raise NotImplementedError

    def stop_peer(self, leg_id: str) -> None:
        """Stop our request ``leg_id`` on the peer (close its response, or cancel it)."""
        raise NotImplementedError

    def next_id(self, kind: str) -> str:
        return f"mcp-proxy-{kind}-{next(self._ids)}"

    # --- client -> peer -------------------------------------------------------------------

    def bridged(self, message: Message) -> None:
        """What the client sent, once bridging: answered here, or carried by a driver."""
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
                self.send_peer(message)
        elif method == "initialize":
            self.deliver_unless_closed(jsonrpc.result_message(
                message.id, self._initialize_result(message)))
        elif method in LOCAL:
            self._local(message)
        else:
            rounds.FirstLeg(self, message).send()

    def _local(self, message: Message) -> None:
        params = message.params
        if message.method == "logging/setLevel":
            self.log_level = params.get("level") if isinstance(params.get("level"), str) \
                else None
        elif message.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if isinstance(uri, str):
                (self.uris.add if message.method == "resources/subscribe"
                 else self.uris.discard)(uri)
                if self.listener.refilter() and message.method == "resources/subscribe":
                    # answered once the listen carries the URI: an update right after the
                    # answer is not lost to the reopening
                    spawn(self._answer_when_listening, message.id, name=f"{self.name}: "
                          "subscribe", on_error=closing(self))
                    return
        self.deliver_unless_closed(jsonrpc.result_message(message.id, {}))

    def _answer_when_listening(self, request_id: Any) -> None:
        if not self.listener.listening.wait(SUBSCRIBE_WAIT):
            logger.info("%s: the %s did not acknowledge the listen within %g s; answering "
                        "resources/subscribe anyway", self.name, self.peer, SUBSCRIBE_WAIT)
        self.deliver_unless_closed(jsonrpc.result_message(request_id, {}))

    def _cancel(self, request_id: Any) -> None:
        driver = self.calls.pop(id_key(request_id), None)
        if driver is not None:
            logger.info("%s: request %r cancelled by the client", self.name, request_id)
            driver.kill(block=False)

    def drive(self, message: Message, answer: Message) -> None:
        """Carry ``message`` on from its first leg's ``answer`` (a greenlet of its own)."""
        task = current_task()
        try:
            answer = rounds.drive(self, message, answer)
        except (CannotCarry, LinkClosed, ServerBusy) as exc:
            answer = rounds.failed(message.id, exc)
        finally:  # a cancelled id the client used again is another request's by now
            if self.calls.get(id_key(message.id)) is task:
                del self.calls[id_key(message.id)]
        if not task.killed:  # a cancel that came while the answer was on its way: none
            self.deliver_unless_closed(answer)

    # --- the 2026-07-28 peer --------------------------------------------------------------

    def leg_message(self, method: str, params: dict, leg_id: str) -> Message:
        """A request to the peer, its ``_meta`` the envelope: the client's identity and level
        (made once per change of them), and what the request had (a progress token)."""
        client, version, level, stamp = self._stamp
        if client is not self.client or version != self.version or level != self.log_level:
            stamp = {VERSION_KEY: self.version,
                     CAPABILITIES_KEY: _dict(self.client.get("capabilities")),
                     CLIENT_INFO_KEY: self.client.get("clientInfo")
                     or {"name": "mcp-proxy", "version": __version__}}
            if self.log_level:
                stamp[LOG_LEVEL_KEY] = self.log_level
            self._stamp = (self.client, self.version, self.log_level, stamp)
        meta = params.get("_meta")
        meta = {**stamp, **meta} if isinstance(meta, dict) else {**stamp}
        if method == "subscriptions/listen":  # no log lines of other requests belong to it
            meta.pop(LOG_LEVEL_KEY, None)
        return Message({"jsonrpc": "2.0", "id": leg_id, "method": method,
                        "params": {**params, "_meta": meta}})

    def leg(self, method: str, params: dict, leg_id: str | None = None,
            timeout: float | None = None, here: bool = False) -> Message | None:
        """Send one request to the peer and wait for its answer (None: it was stopped, or
        had no answer within ``timeout``); ``here``: called by the request's driver, which
        its cancellation kills (see ``send_peer``)."""
        leg_id = leg_id or self.next_id("leg")
        waiter = self.legs[id_key(leg_id)] = AsyncResult()
        try:
            self.send_peer(self.leg_message(method, params, leg_id), here)
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            logger.info("%s: no answer to %s within %g s", self.name, method, timeout)
            return None
        finally:
            if self.legs.pop(id_key(leg_id), None) is not None and not waiter.ready():
                self.stop_leg(leg_id)  # killed or given up on while waiting

    def stop_leg(self, leg_id: str) -> None:
        """Stop our request ``leg_id``: the peer is told, its waiter gets None, and an answer
        that still comes ends here quietly."""
        waiter = self.legs.pop(id_key(leg_id), None)
        self.stopped[id_key(leg_id)] = None
        if len(self.stopped) > MAX_STOPPED:
            del self.stopped[next(iter(self.stopped))]
        self.stop_peer(leg_id)
        if waiter is not None and not waiter.ready():
            waiter.set(None)

    def consumes(self, message: Message) -> bool:
        """Take what the peer sent if it is the bridge's: a leg's answer wakes its waiter,
        the listener takes its notifications. False: it is for the client."""
        if message.kind == jsonrpc.RESPONSE:
            waiter = self.legs.get(id_key(message.id))
            if waiter is not None:
                waiter.set(message)
                return True
            if self.bridging:  # every request the peer gets is a leg
                if id_key(message.id) in self.stopped:
                    del self.stopped[id_key(message.id)]
                    logger.debug("%s: dropped a late answer to %r", self.name, message.id)
                else:
                    logger.warning("%s: dropped the %s's answer to %r, which no request of "
                                   "the proxy has in flight", self.name, self.peer, message.id)
                return True
        elif self.bridging and message.kind == jsonrpc.NOTIFICATION:
            return self.listener.consume(message)
        return False

    def discover(self, init: Message, refusal: Message | None) -> bool:
        """Find out whether the peer speaks 2026-07-28; if so, answer ``initialize`` and
        bridge from now on (True). Else the client gets ``refusal`` or an error (False)."""
        self.client = _dict(init.obj.get("params"))
        self.version = era_headers.MODERN_VERSION
        timeout = self.discover_timeout
        answer = self.leg("server/discover", {}, self.next_id("discover"), timeout)
        data = _dict((answer.error or {}).get("data")) if answer is not None else {}
        offered = era_headers.modern_version(data)
        if offered is not None and offered != self.version:  # a newer era: ask in its own
            self.version = offered
            answer = self.leg("server/discover", {}, self.next_id("discover"), timeout)
        result = answer.obj.get("result") if answer is not None else None
        version = era_headers.modern_version(result) if isinstance(result, dict) else None
        if version is None:
            why = (answer.error if answer is not None else None) or (
                "no answer" if answer is None else "no 2026-07-28 version in its answer")
            logger.info("%s: server/discover found no 2026-07-28 %s (%s)", self.name,
                        self.peer, why)
            self.deliver_unless_closed(refusal or jsonrpc.error_message(
                init.id, jsonrpc.INTERNAL_ERROR,
                f"the {self.peer} does not answer server/discover as a 2026-07-28 server "
                f"({why.get('message') if isinstance(why, dict) else why})"))
            return False
        self.discovered, self.version, self.bridging = result, version, True
        logger.info("%s: the %s speaks only %s: bridging the client's 2025-era session to it",
                    self.name, self.peer, version)
        self.deliver_unless_closed(jsonrpc.result_message(init.id,
                                                          self._initialize_result(init)))
        self.listener.start()
        return True

    def _initialize_result(self, init: Message) -> dict:
        self.client = _dict(init.obj.get("params"))
        asked = self.client.get("protocolVersion")
        found = self.discovered
        meta = _dict(found.get("_meta"))
        info = meta.get(SERVER_INFO_KEY) or found.get("serverInfo")
        result = {"protocolVersion": asked if asked in LEGACY_VERSIONS
                  else LEGACY_VERSIONS[0],
                  # logging: setLevel is answered here, and stamped on later requests
                  "capabilities": {"logging": {}, **_dict(found.get("capabilities"))},
                  "serverInfo": info if isinstance(info, dict)
                  else {"name": self.peer, "version": "unknown"}}
        if isinstance(found.get("instructions"), str):
            result["instructions"] = found["instructions"]
        return result

    # --- to the client, and closing -------------------------------------------------------

    def deliver_unless_closed(self, message: Message) -> None:
        try:
            self.deliver(message)
        except LinkClosed:
            pass

    def _on_close(self, reason: str) -> None:
        self.listener.stop()
        calls, self.calls = self.calls, {}
        for driver in calls.values():
            driver.kill(block=False)
        for waiter in list(self.legs.values()):  # e.g. the discover probe: it waits no more
            if not waiter.ready():
                waiter.set(None)
