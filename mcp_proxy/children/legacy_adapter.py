"""A 2025-era child that serves 2026-07-28 requests: the modern->legacy bridge (issue 25).

When the lane's ``server/discover`` probe finds a server legacy-only (``lane.py``), modern
requests are carried on a legacy session with such a child instead of refused with -32022
(SESSIONS.md §A.4, "Full adapter"). :class:`LegacySession` is that session: a
:class:`Multiplexer` whose child the proxy initializes itself from the first request's
``_meta`` (its clientInfo and capabilities), and whose routing translates between the eras:

- ``server/discover`` is answered here from the child's ``initialize`` result (see
  :func:`discover_result`);
- a request goes on with the ``io.modelcontextprotocol/*`` envelope keys stripped from its
  ``_meta`` (the progress token, rewritten as on any shared child, and the other keys kept);
  its ``logLevel`` becomes the child's ``logging/setLevel`` (if the child offers logging)
  and the request's own filter for log lines;
- an answer gets ``resultType: "complete"``; progress goes to its request; a log line to the
  requests in flight that asked for log lines and whose level admits it; ``ping`` is
  answered here; ``subscriptions/listen`` is served here, and ``list_changed`` and
  ``resources/updated`` go to the listens that asked for them (``listening.py``);
- a request of the child's own (sampling, elicitation, roots) during a call becomes an
  ``input_required`` round for its caller, when it can be attributed (``parking.py``);
  otherwise the child gets an error that says why.

Cancellation (the caller closed its stream) is the multiplexer's: ``notifications/cancelled``
for every request of the closed port. Which child serves a request is ``legacy_bridge.py``'s.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from gevent.lock import Semaphore

from mcp_proxy.children.legacy_bridge import ROUND_CAPABILITIES
from mcp_proxy.children.listening import LISTEN_METHOD, LISTENED, Listening
from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.children.parking import Parking
from mcp_proxy.children.port import Port, admits
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.era_headers import header_params, list_header_params
from mcp_proxy.core.jsonrpc import Message, result_message
from mcp_proxy.core.protocol import (
    CAPABILITIES_KEY,
    LEGACY_VERSIONS,
    LOG_LEVEL_KEY,
    MODERN_VERSION,
    NAMED_BY,
    SERVER_INFO_KEY,
)
from mcp_proxy.errors import LinkClosed, ProxyError

logger = logging.getLogger(__name__)

ENVELOPE_PREFIX = "io.modelcontextprotocol/"
SUPPORTED_VERSIONS = [MODERN_VERSION]
START_TIMEOUT = 60.0  # spawn to initialize answered (a uvx or npx server may download first)
REQUEST_TIMEOUT = 10.0  # the proxy's own tools/list and logging/setLevel
LISTING_TTL = 60.0  # as the lane's: an unknown tool name is listed again after this long
# the results the 2026-07-28 schema gives a cache lifetime (ttlMs) and scope (cacheScope)
CACHEABLE = ("tools/list", "prompts/list", "resources/list", "resources/templates/list",
             "resources/read")


def discover_result(init_result: dict) -> dict:
    """A 2026-07-28 DiscoverResult made of a 2025-era ``initialize`` result."""
    capabilities = copy.deepcopy(init_result.get("capabilities"))
    if not isinstance(capabilities, dict):
        capabilities = {}
    result: dict = {"supportedVersions": list(SUPPORTED_VERSIONS),
                    "capabilities": capabilities, "resultType": "complete",
                    "ttlMs": 0, "cacheScope": "private"}
    if isinstance(init_result.get("instructions"), str):
        result["instructions"] = init_result["instructions"]
    if isinstance(init_result.get("serverInfo"), dict):
        result["_meta"] = {SERVER_INFO_KEY: init_result["serverInfo"]}
    return result


def legacy_request(message: Message) -> Message:
    """``message`` with the 2026-07-28 envelope keys stripped from its ``_meta``."""
    params = message.obj.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return message
    kept = {key: value for key, value in meta.items() if not key.startswith(ENVELOPE_PREFIX)}
    rest = {key: value for key, value in params.items() if key != "_meta"}
    return Message({**message.obj, "params": {**rest, **({"_meta": kept} if kept else {})}})


def modern_answer(message: Message, method: str | None) -> Message:
    """A 2025-era answer as the 2026-07-28 era has it: a result says ``resultType``, and a
    listing or a read (of ``method``) how long it may be cached and by whom (not at all,
    and by this caller only: a 2025-era server may tailor it to the caller)."""
    result = message.obj.get("result")
    if not isinstance(result, dict):
        return message
    added: dict = {"resultType": "complete"}
    if method in CACHEABLE:
        added.update(ttlMs=0, cacheScope="private")
    if all(key in result for key in added):
        return message
    return Message({**message.obj, "result": {**added, **result}})


class LegacySession(Multiplexer, Parking, Listening):
    """A 2025-era child initialized by the proxy for 2026-07-28 callers (module docstring)."""

    restarts = False  # started again when the next request needs it

    def __init__(self, name: str, spawn, capabilities: dict, client_info: Any) -> None:
        """``capabilities``: the client capabilities to initialize the child with (those
        the bridge carries); with sampling, elicitation or roots among them the child is
        leased to one caller's request at a time (``exclusive``)."""
        super().__init__(name, spawn, capabilities)
        self._init_parking()
        self.exclusive = any(key in capabilities for key in ROUND_CAPABILITIES)
        self.client_info = client_info if isinstance(client_info, dict) else {}
        self.last_used = time.monotonic()
        self.tools: dict[str, dict[tuple, str] | None] = {}  # see header_params
        self.listed_at = float("-inf")
        self._listing = Semaphore()

    def _handshake(self, child) -> None:
        info = {"name": str(self.client_info.get("name") or "mcp-proxy"),
                "version": str(self.client_info.get("version") or "0")}
        self.init_result = self._request("initialize", {
            "protocolVersion": LEGACY_VERSIONS[0], "capabilities": self.capabilities,
            "clientInfo": {**self.client_info, **info}}, START_TIMEOUT)
        child.send(Message({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        for uri in self.sharing.subscribed:  # a restarted child: the listens still hold them
            self._request("resources/subscribe", {"uri": uri}, REQUEST_TIMEOUT)
        self.level = None
        self.tools.clear()
        self.listed_at = float("-inf")

    def release(self, port: Port) -> None:
        self.last_used = time.monotonic()
        super().release(port)

    def reserve(self) -> None:
        """Hold an exclusive child for the request it was picked for, until it is admitted."""
        self.reserved_until = time.monotonic() + START_TIMEOUT

    def idle_since(self) -> float | None:
        """Since when nobody uses this child (None: a request or a round is out)."""
        return None if self.sharing.ports or self.parked else self.last_used

    def close(self, reason: str) -> None:
        self.end_parking()
        super().close(reason)

    # -- the edge's Mcp-Param-* checks ----------------------------------------------------

    def tool_headers(self, name: str, meta: dict) -> dict[tuple, str] | None:
        """As ``ModernLane.tool_headers``: tool ``name``'s ``x-mcp-header`` arguments. Not
        listed while a round is out: the child may be waiting for it, answering nothing."""
        self.ensure_started()
        if (name not in self.tools and not self.parked
                and time.monotonic() - self.listed_at > LISTING_TTL):
            with self._listing:
                if name not in self.tools and time.monotonic() - self.listed_at > LISTING_TTL:
                    self._list_tools()
        return self.tools.get(name, {})

    def _list_tools(self) -> None:
        self.tools.update(list_header_params(self._request, {}, REQUEST_TIMEOUT))
        self.listed_at = time.monotonic()

    # -- the two directions --------------------------------------------------------------

    def route(self, port: Port, message: Message) -> None:
        if message.kind != jsonrpc.REQUEST:
            return  # the edge answers modern notifications 202 and drops them
        self.last_used = time.monotonic()
        try:
            self._route(port, message)
        finally:
            self.reserved_until = 0.0  # the request the bridge reserved this child for is in

    def _route(self, port: Port, message: Message) -> None:
        if message.method == "server/discover":
            if self.started_for(port, message):
                port.deliver_if_open(result_message(message.id,
                                                    discover_result(self.init_result)))
            return
        if message.method == LISTEN_METHOD:
            self.listen(port, message)
            return
        meta = message.params.get("_meta")
        capabilities = meta.get(CAPABILITIES_KEY) if isinstance(meta, dict) else None
        port.capabilities = capabilities if isinstance(capabilities, dict) else {}
        if message.method in NAMED_BY and message.request_state is not None:
            self.resume(port, message)  # an input_required round's retry
            return
        level = meta.get(LOG_LEVEL_KEY) if isinstance(meta, dict) else None
        port.level = level if isinstance(level, str) else None
        if port.level is not None:
            self._set_level(port.level)
        self.route_request(port, legacy_request(message))

    def _set_level(self, level: str) -> None:
        """The child logs at least as verbosely as the most verbose request in flight."""
        if self.state != "running" or not isinstance(
                (self.init_result or {}).get("capabilities", {}).get("logging"), dict):
            return
        if self.level is not None and admits(self.level, level):
            return  # already as verbose
        self.level = level
        try:
            self._request("logging/setLevel", {"level": level}, REQUEST_TIMEOUT)
        except (ProxyError, LinkClosed) as exc:
            logger.info("%s: logging/setLevel %s failed: %s", self.name, level, exc)

    def route_outbound(self, message: Message) -> None:
        kind = message.kind
        if kind == jsonrpc.RESPONSE:
            call = self.sharing.calls.get(message.id) if isinstance(message.id, int) else None
            method = call.method if call is not None else None
            if method == "tools/list":
                self._remember_tools(message)
            self.route_answer(modern_answer(message, method))
        elif kind == jsonrpc.REQUEST:
            if message.method == "ping":
                self.answer_server(result_message(message.id, {}))
                return
            why = self.park(message)
            if why is not None:
                logger.info("%s: refused the server's %s: %s", self.name, message.method, why)
                self.answer_server(jsonrpc.error_message(
                    message.id, jsonrpc.INTERNAL_ERROR, f"{message.method} cannot be put to "
                    f"the 2026-07-28 client: {why}"))
        elif message.method == "notifications/progress":
            self.route_notification(message)
        elif message.method in LISTENED:
            self.route_listened(message)
        elif message.method == "notifications/message":
            level = message.params.get("level")
            for port in list(self.sharing.ports):
                if port.level is not None and port.inflight and admits(port.level, level):
                    port.deliver_if_open(message)
        else:
            logger.debug("%s: dropped %r: not bridged to 2026-07-28 requests", self.name,
                         message)

    def _remember_tools(self, message: Message) -> None:
        result = message.obj.get("result")
        if isinstance(result, dict):
            self.tools.update(header_params(result.get("tools")))
