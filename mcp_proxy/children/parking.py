"""Reverse MRTR on the modern->legacy bridge: a 2025-era child's own request during a call,
put to its 2026-07-28 caller as an ``input_required`` round (SESSIONS.md §A.4).

:class:`Parking` is a mixin of ``legacy_adapter.LegacySession`` (it never imports it):

- a ``sampling/createMessage``, ``elicitation/create`` or ``roots/list`` from the child is
  **parked** when the child is leased to one caller (``exclusive``: the caller declared one
  of those capabilities, so the bridge gives it a child of its own while a request is in
  flight) and that caller's one request in flight declared what it needs. The request is
  answered ``input_required``: ``inputRequests`` holds the child's request under ``KEY``,
  and ``requestState`` is a handle (``request_state.wrap_state``) naming this child, the
  parked request and the caller's principal. The call stays open on the child;
- the caller's retry with ``inputResponses`` answers the parked request and takes over the
  call: its progress and answer now go to the retry's stream. A handle of another child,
  another caller, a used or expired one gets -32602 "Invalid or expired requestState";
  missing or junk ``inputResponses`` get -32602 too, and the round stays parked;
- a round not taken up within ``PARK_TTL`` gets the child an error, and its call is
  cancelled (``notifications/cancelled``);
- anything the child asks that cannot be attributed so is refused with an error that says
  why (never guessed: an elicitation could reach the wrong user).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import gevent

from mcp_proxy.children.request_state import new_maker, unwrap_state, wrap_state
from mcp_proxy.children.sharing import Sharing
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, with_id

logger = logging.getLogger(__name__)

# how long a parked request waits for its caller's retry (the variable is internal: the
# tests shorten it); a person may be filling in a form
PARK_TTL = float(os.environ.get("MCP_PROXY_BRIDGE_PARK_TTL", "300"))
KEY = "input-1"  # the one entry of inputRequests (a legacy child asks one thing at a time)
INVALID_STATE = "Invalid or expired requestState"


class Parked:
    """A child's request waiting for its caller's retry; meanwhile it stands in as the port
    of the call it interrupted (an answer or error that comes is kept for the retry)."""

    name = "parked round"

    def __init__(self, child_id: Any, cid: int, token: Any) -> None:
        self.child_id, self.cid, self.token = child_id, cid, token
        self.inflight: dict[tuple, int] = {}
        self.answer: Message | None = None
        self.timer: gevent.Greenlet | None = None

    def deliver_if_open(self, message: Message) -> bool:
        if message.kind == jsonrpc.RESPONSE:
            self.answer = message
        return True


class Parking:
    """The bridge's input_required rounds (see the module docstring)."""

    # what LegacySession provides
    name: str
    sharing: Sharing
    exclusive: bool
    answer_server: Callable[[Message], None]
    _notify: Callable[[str, dict], None]

    def _init_parking(self) -> None:
        self.serial = new_maker()  # what a handle names this child by
        self.parked: dict[str, Parked] = {}
        self.reserved_until = 0.0

    def leased(self) -> bool:
        """Whether an exclusive child is taken (a request in flight, a parked round, or
        reserved for a request on its way); a listen does not take it."""
        return self.exclusive and bool(any(port.inflight for port in self.sharing.ports)
                                       or self.parked or self.reserved_until > time.monotonic())

    def owns(self, handle: Any) -> bool:
        return unwrap_state(handle, self.serial) is not None

    def park(self, message: Message) -> str | None:
        """Park the child's request as its caller's round; why not if it cannot be."""
        if not self.exclusive:
            return "the client did not declare sampling, elicitation or roots"
        busy = [port for port in self.sharing.ports if port.inflight]
        if len(busy) != 1 or len(busy[0].inflight) != 1:
            return "no single request in flight to put it to"
        port = busy[0]
        if not port.declares(message.method):
            return "the client did not declare that capability"
        ((client_key, cid),) = port.inflight.items()
        call = self.sharing.calls.get(cid)
        if call is None:
            return "its call has ended"
        parked = Parked(message.id, cid, call.token)
        pid = os.urandom(12).hex()
        del port.inflight[client_key]
        original, call.port = call.original, parked
        self.parked[pid] = parked
        parked.timer = gevent.spawn_later(PARK_TTL, self._expire, pid)
        params = message.obj.get("params")
        request = {"method": message.method, **({"params": params} if params else {})}
        port.deliver_if_open(result_message(original, {
            "resultType": "input_required", "inputRequests": {KEY: request},
            "requestState": wrap_state({"parked": pid}, self.serial, port.principal)}))
        return None

    def resume(self, port: Any, message: Message) -> None:
        """A retry: answer the parked request with the caller's input, take over the call."""
        opened = unwrap_state(message.request_state, self.serial)
        state = opened[1] if opened is not None else None
        pid = state.get("parked") if isinstance(state, dict) else None
        parked = self.parked.get(pid) if isinstance(pid, str) else None
        if parked is None or opened[0] != port.principal:
            port.deliver_if_open(jsonrpc.error_message(message.id, -32602, INVALID_STATE))
            return
        responses = message.obj["params"].get("inputResponses")
        answer = responses.get(KEY) if isinstance(responses, dict) else None
        if not isinstance(answer, dict):
            port.deliver_if_open(jsonrpc.error_message(
                message.id, -32602, f"Invalid params: inputResponses[{KEY!r}] must be the "
                "result the client was asked for (an object)"))
            return
        del self.parked[pid]
        if parked.timer is not None:
            parked.timer.kill(block=False)
        self.answer_server(result_message(parked.child_id, answer))
        if parked.answer is not None:  # the call ended while the round was out
            port.deliver_if_open(with_id(parked.answer, message.id))
            return
        call = self.sharing.calls.get(parked.cid)
        if call is None:
            port.deliver_if_open(jsonrpc.error_message(
                message.id, jsonrpc.INTERNAL_ERROR, "the server ended the call"))
            return
        meta = message.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        call.port, call.original = port, message.id
        call.token = parked.token if token is None else token
        port.inflight[id_key(message.id)] = parked.cid

    def _expire(self, pid: str) -> None:
        parked = self.parked.pop(pid, None)
        if parked is None:
            return
        logger.info("%s: an input_required round was not taken up within %g s; the call is "
                    "cancelled", self.name, PARK_TTL)
        self.answer_server(jsonrpc.error_message(
            parked.child_id, jsonrpc.INTERNAL_ERROR,
            f"the client did not answer within {PARK_TTL:g} s"))
        if self.sharing.close_call(parked.cid) is not None:
            self._notify("notifications/cancelled", {
                "requestId": parked.cid, "reason": "the client did not answer in time"})

    def end_parking(self) -> None:
        for parked in self.parked.values():
            if parked.timer is not None:
                parked.timer.kill(block=False)
        self.parked.clear()
