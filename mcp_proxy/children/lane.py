"""The 2026-07-28 lane: one shared child per configured server, opened with ``server/discover``.

Modern requests carry their protocol version and client capabilities in ``_meta``, so one
child serves every caller: ids and progress tokens are rewritten as on any shared child
(the :class:`Multiplexer` it is, through its ``fanin.py`` and ``fanout.py`` routing), and the
rest is specific to the era (SESSIONS.md §A.3):

- the child's first frame is ``server/discover``; a child that does not answer it with a
  result is **legacy-only**, remembered for the life of the proxy, and never gets a modern
  frame (the edge carries modern requests on legacy sessions instead: ``legacy_adapter.py``);
- an ``input_required`` result's ``requestState`` is wrapped in a signed handle naming this
  child (its generation), the caller and an expiry (``STATE_TTL``); any other retry gets
  -32602 as the child itself would answer. A caller without credentials is a nonce, spent
  on the first retry: nobody can replay its handle;
- ``subscriptions/listen`` traffic carries the child's id as ``subscriptionId``: restored to
  the caller's listen id;
- a log line correlates with nothing on stdio: it goes to the caller only when exactly one
  request in flight asked for log lines (``_meta`` logLevel) and its level admits the line,
  else it is dropped (logged at DEBUG);
- ``tools/list`` results are remembered for the edge's ``Mcp-Param-*`` checks; an unknown
  tool has the proxy list them itself, once per ``LISTING_TTL`` or ``list_changed``; if that
  fails, the call is refused, never passed on unchecked;
- a dead child is started again only when the next request needs it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from gevent.lock import Semaphore

from mcp_proxy import __version__
from mcp_proxy.children import request_state
from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.children.port import Port, admits
from mcp_proxy.children.request_state import unwrap_state, wrap_state
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.era_headers import header_params, list_header_params
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link
from mcp_proxy.core.protocol import (
    CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    ENVELOPE,
    MODERN_VERSION,
    NAMED_BY,
    SUBSCRIPTION_KEY,
    VERSION_KEY,
)
from mcp_proxy.errors import LegacyOnly, LinkClosed, ProxyError

logger = logging.getLogger(__name__)

INVALID_PARAMS = -32602
MRTR_METHODS = tuple(NAMED_BY)  # the methods that may answer input_required
DISCOVER_TIMEOUT = 10.0
MAX_UNSPENT = 100_000  # anonymous handles not yet redeemed, per child (a few MB at most)
# a name missing from a listing is unknown this long (or until list_changed, which the proxy
# hears only on a caller's listen): made-up names must not cost a listing each
LISTING_TTL = 60.0
LISTING_RETRY = 5.0  # after a failed listing, calls that need one get its error this long


class ModernLane(Multiplexer):
    """A shared child that serves 2026-07-28 requests (see the module docstring)."""

    opening = "server/discover"
    restarts = False

    def __init__(self, name: str, spawn) -> None:
        super().__init__(name, spawn)
        self.legacy_only = False
        self.discovered: dict | None = None
        self.generation = 0
        self.tools: dict[str, dict[tuple, str] | None] = {}  # see header_params
        self.unspent: dict[str, float] = {}  # anonymous handles' nonces -> expiry, oldest first
        self.listed_at = float("-inf")  # when the proxy last listed every tool itself
        self.listing_failed: tuple[float, str] | None = None  # when, and why
        self._listing = Semaphore()

    def ensure_started(self) -> None:
        if self.state != "running" and not self.legacy_only:
            # requests that arrive during the era probe wait for it and learn its answer,
            # rather than each start a server to ask again (nor count as starts of a loop)
            with self._starting:
                pass
        if self.legacy_only:
            raise LegacyOnly(f"{self.name}: the server speaks only the 2025 protocol era")
        super().ensure_started()

    def _handshake(self, child: Link) -> None:
        meta = {VERSION_KEY: MODERN_VERSION, CAPABILITIES_KEY: {},
                CLIENT_INFO_KEY: {"name": "mcp-proxy", "version": __version__}}
        try:
            self.discovered = self._request("server/discover", {"_meta": meta},
                                            DISCOVER_TIMEOUT)
        except LinkClosed:
            raise  # it died: a broken server, not an old one
        except ProxyError as exc:  # an error answer, or none in time
            self.legacy_only = True
            logger.info("%s: the server is legacy-only (%s); 2026-07-28 requests are carried "
                        "on 2025-era sessions (bridge modern->legacy)", self.name, exc)
            raise LegacyOnly(f"{self.name}: legacy-only server ({exc})") from None
        self.generation = request_state.new_maker()  # unique in the process: see there
        self.tools.clear()
        self.unspent.clear()
        self.listed_at, self.listing_failed = float("-inf"), None

    def sync_level(self) -> None:
        """Nothing to give the child: a 2026-07-28 request carries its own log level in its
        ``_meta`` and a lane's port never has one, so the base class's look at every port on
        each request's release (the cost growing with the requests in flight) is skipped."""

    def _child_ended(self, child: Link) -> None:
        if self.legacy_only and child is self.child:  # the probe's child, stopped on purpose
            self.child = None
            return
        super()._child_ended(child)

    def tool_headers(self, name: str, meta: dict) -> dict[tuple, str] | None:
        """The ``x-mcp-header`` arguments of tool ``name`` (none for an unknown tool, None if
        invalid); lists the tools if it is not known. Raises ProxyError if they cannot be."""
        def stale() -> bool:
            return name not in self.tools and time.monotonic() - self.listed_at > LISTING_TTL

        if stale():
            with self._listing:  # concurrent calls of unknown tools wait for one listing
                failed = self.listing_failed
                if failed is not None and time.monotonic() - failed[0] < LISTING_RETRY:
                    raise ProxyError(failed[1])  # those who waited for it learn its failure
                if stale():
                    try:
                        self._list_tools({key: meta[key] for key in ENVELOPE if key in meta})
                    except ProxyError as exc:
                        self.listing_failed = (time.monotonic(), str(exc))
                        raise
                    self.listing_failed = None
        return self.tools.get(name, {})

    def _list_tools(self, meta: dict) -> None:
        self.tools.update(list_header_params(self._request, {"_meta": meta}, DISCOVER_TIMEOUT))
        self.listed_at = time.monotonic()

    # -- the two directions --------------------------------------------------------------

    def route(self, port: Port, message: Message) -> None:
        if message.kind != jsonrpc.REQUEST:
            # the edge answers modern notifications 202 and drops them; a cancel comes only
            # from a 2025-era session's era bridge (modern_child.py), for its own requests
            if message.method == "notifications/cancelled":
                super().route(port, message)
            return
        params, spent = None, None
        if message.method in MRTR_METHODS:
            handle = message.request_state
            if handle is not None:
                ours, state, spent = self._unseal(handle, port.principal)
                if not ours:
                    logger.warning("%s: refused the requestState of request %r from %s: "
                                   "%s", port.name, message.id, port.peer,
                                   "another caller's" if state is not None else
                                   "expired, spent, or of another server process")
                    port.deliver_if_open(jsonrpc.error_message(message.id, INVALID_PARAMS,
                                                     "Invalid or expired requestState"))
                    return
                params = {"requestState": state}
        sent = False
        try:
            sent = self.route_request(port, message, params)
        finally:
            if spent is not None and not sent:  # not sent (busy, no server): the retry the
                self.unspent.setdefault(*spent)  # client is told to make may use it again

    def route_outbound(self, message: Message) -> None:
        kind = message.kind
        if kind == jsonrpc.RESPONSE:
            self.route_answer(self._outbound(message))
        elif kind == jsonrpc.REQUEST:
            self.answer_server(jsonrpc.error_message(
                message.id, jsonrpc.INTERNAL_ERROR,
                "a 2026-07-28 server must not send requests (use input_required)"))
        elif message.method == "notifications/progress":
            self.route_notification(message)
        else:
            self._notification(message)

    def _outbound(self, message: Message) -> Message:
        """An answer with its request state wrapped, and tools/list remembered."""
        call = self.sharing.calls.get(message.id) if isinstance(message.id, int) else None
        if call is None or call.port is None or (
                call.method != "tools/list" and message.request_state is None):
            return message  # nothing to see: no need to parse a large answer again
        obj = message.obj
        result = obj.get("result")
        if not isinstance(result, dict):
            return message
        if call.method == "tools/list":
            self.tools.update(header_params(result.get("tools")))
        if "requestState" not in result:
            return message
        state = self._seal(result["requestState"], call.port.principal)
        return Message({**obj, "result": {**result, "requestState": state}})

    def _seal(self, state: Any, principal: str) -> str:
        """A handle for ``state``: bound to the caller's credentials, or good once without."""
        if principal:
            return wrap_state(state, self.generation, principal)
        nonce = "~" + os.urandom(16).hex()  # "~" never starts a principal (hex)
        now, unspent = time.monotonic(), self.unspent
        while unspent and (len(unspent) >= MAX_UNSPENT or next(iter(unspent.values())) <= now):
            del unspent[next(iter(unspent))]  # expired, or the oldest past the bound
        unspent[nonce] = now + request_state.STATE_TTL
        return wrap_state(state, self.generation, nonce)

    def _unseal(self, handle: Any, principal: str) -> tuple[bool, Any, tuple | None]:
        """(True, the child's state, None) if ``handle`` is this caller's; an anonymous one
        is spent here (a second use is refused), and its (nonce, expiry) comes third."""
        opened = unwrap_state(handle, self.generation)
        if opened is None:
            return False, None, None
        caller, state = opened
        if principal:
            return caller == principal, state, None
        expiry = self.unspent.pop(caller, None)
        return expiry is not None, state, (caller, expiry) if expiry is not None else None

    def _notification(self, message: Message) -> None:
        if message.method == "notifications/tools/list_changed":
            self.tools.clear()  # what the edge checks is listed again when next needed
            self.listed_at, self.listing_failed = float("-inf"), None
        meta = message.params.get("_meta")
        listen = meta.get(SUBSCRIPTION_KEY) if isinstance(meta, dict) else None
        if listen is not None:
            call = self.sharing.calls.get(listen) if isinstance(listen, int) else None
            if call is not None and call.port is not None:
                whole = message.obj["params"]
                call.port.deliver_if_open(jsonrpc.rewritten(message, params={
                    "_meta": {**whole["_meta"], SUBSCRIPTION_KEY: call.original}}))
            return
        if message.method == "notifications/message":
            # on stdio a log line names no request: it is only sure to be for the caller
            # when one request in flight asked for log lines (set a log level)
            asked = [call for call in self.sharing.calls.values() if call.level is not None]
            if len(asked) == 1 and admits(asked[0].level, message.params.get("level")):
                asked[0].port.deliver_if_open(message)
                return
        logger.debug("%s: dropped %r: it names no single request or listen", self.name,
                     message)
