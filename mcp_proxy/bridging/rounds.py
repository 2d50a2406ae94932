"""One 2025-era client request carried to a 2026-07-28 server, ``input_required`` rounds
included (SEP-2322, SESSIONS.md §A.5, §A.6 (2a)): a client mode remote or a server mode child.

A round's ``inputRequests`` (sampling, elicitation, roots) are put to the 2025-era client as
ordinary server-to-client requests with ids of ours (``mcp-proxy-in-<n>``); their results go
back in a retry of the original request under a new id, with ``inputResponses`` and the
``requestState`` echoed verbatim. The client's own id gets the final answer, without
``resultType: "complete"``. What the legacy flow cannot carry is refused with
``errors.CannotCarry``, which the bridge turns into a JSON-RPC error that says why: never
guessed at. It only drives: its requests go out through the bridge's ``leg``
(legacy_face.py) and ``deliver``, it touches no wire.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from gevent.event import AsyncResult

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, start
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.errors import CannotCarry, LinkClosed, ServerBusy

logger = logging.getLogger(__name__)

MAX_ROUNDS = 10
MAX_REQUESTS = 8  # per round (both limits as in mcp-remote)
MISSING_CAPABILITY = -32021
HEADER_MISMATCH = -32020
INVALID_PARAMS = -32602
CAPABILITY_OF = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                 "roots/list": "roots"}


def drive(bridge, message: Message, answer: Message | None = None) -> Message:
    """The final answer to the client's ``message`` (its own id), after every round;
    ``answer``: the first leg's, when it was sent without a driver (``FirstLeg``)."""
    params = dict(message.obj.get("params") or {})
    rounds, refreshed = 0, False
    while True:
        if answer is None:
            answer = bridge.leg(message.method, params, here=True)
        if answer is None:
            raise CannotCarry("the request was stopped")
        if not refreshed and _refused_headers(message, answer):
            refreshed = True  # the tool's x-mcp-header annotations may have changed: once
            _list_tools(bridge)
            answer = None
            continue
        kind = answer.result_type
        if kind != "input_required":
            return _final(message.id, answer, kind)
        if rounds == MAX_ROUNDS:
            raise CannotCarry(f"the {bridge.peer} asked for input more than {MAX_ROUNDS} times "
                              f"for one {message.method}; mcp-proxy gave up")
        rounds += 1
        result = answer.obj["result"]
        responses = _ask(bridge, result.get("inputRequests"))
        params = {**(message.obj.get("params") or {}), "inputResponses": responses}
        if "requestState" in result:
            params["requestState"] = result["requestState"]
        answer = None


def settled(message: Message, answer: Message) -> Message | None:
    """The client's final answer if the first leg's ``answer`` needs no other round."""
    kind = answer.result_type
    if kind == "input_required" or (answer.error is not None
                                    and _refused_headers(message, answer)):
        return None
    return _final(message.id, answer, kind)


def failed(request_id: Any, exc: Exception) -> Message:
    """The client's answer to a request that could not be carried (``exc`` says why)."""
    if isinstance(exc, CannotCarry):
        return jsonrpc.error_message(request_id, exc.code, str(exc), exc.data)
    return jsonrpc.error_message(request_id, jsonrpc.INTERNAL_ERROR,
                                 f"MCP server unavailable: {exc}")


class FirstLeg:
    """A client request whose first leg is out with no driver: most answers are final and
    go to the client from the greenlet that read them (no greenlet, no wake-up of ours per
    call); a driver (``drive``) starts only for a second round. It stands for the leg's
    waiter in ``bridge.legs`` and for the driver in ``bridge.calls``. The leg has the
    client's id, as a relay's request has (its answer then goes back as it came), unless
    that id looks like ours or is a leg's in flight already."""

    __slots__ = ("bridge", "message", "leg_id", "leg_key", "key")

    def __init__(self, bridge, message: Message) -> None:
        self.bridge, self.message = bridge, message
        self.leg_id, self.key = message.id, id_key(message.id)
        self.leg_key = self.key
        if self.key in bridge.legs or (type(self.leg_id) is str
                                       and self.leg_id.startswith("mcp-proxy-")):
            self.leg_id = bridge.next_id("leg")
            self.leg_key = (True, self.leg_id)

    def send(self) -> None:
        bridge, message = self.bridge, self.message
        params = message.obj.get("params", {})
        if not isinstance(params, dict):  # JSON-RPC allows an array; no MCP request has one
            bridge.deliver_unless_closed(jsonrpc.error_message(
                message.id, INVALID_PARAMS, "Invalid params: MCP params are an object"))
            return
        bridge.calls[self.key] = bridge.legs[self.leg_key] = self
        leg = bridge.leg_message(message.method, params, self.leg_id)
        try:
            bridge.send_peer(leg)
        except (LinkClosed, ServerBusy) as exc:
            if self._forget():
                bridge.deliver_unless_closed(failed(message.id, exc))

    def ready(self) -> bool:
        return False  # a waiter that is set is no longer in ``bridge.legs``

    def set(self, answer: Message | None) -> None:
        """The leg's answer (None: it was stopped, or the bridge closed)."""
        if not self._forget():
            return
        bridge, message = self.bridge, self.message
        if answer is None:
            bridge.deliver_unless_closed(failed(message.id, CannotCarry("the request was "
                                                                        "stopped")))
            return
        final = settled(message, answer)
        if final is not None:
            bridge.deliver_unless_closed(final)
        else:
            bridge.calls[self.key] = start(bridge.drive, message, answer,
                                           name=f"{bridge.name}: {message.method}",
                                           on_error=closing(bridge))

    def kill(self, block: bool = False) -> None:
        """The client cancelled its request: stop the leg; no answer goes to the client."""
        if self._forget():
            self.bridge.stop_leg(self.leg_id)

    def _forget(self) -> bool:
        """Leave the bridge's tables; False if it already had (answered, stopped)."""
        legs, calls = self.bridge.legs, self.bridge.calls
        if legs.get(self.leg_key) is not self:
            return False
        del legs[self.leg_key]
        if calls.get(self.key) is self:
            del calls[self.key]
        return True


def _refused_headers(message: Message, answer: Message) -> bool:
    return message.method == "tools/call" and (answer.error or {}).get("code") == HEADER_MISMATCH


def _list_tools(bridge) -> None:
    """List the peer's tools (up to 10 pages): the upstream learns their headers."""
    logger.info("the %s refused a tools/call's headers; listing tools again", bridge.peer)
    cursor = None
    for _ in range(10):
        answer = bridge.leg("tools/list", {"cursor": cursor} if cursor else {}, here=True)
        result = answer.obj.get("result") if answer is not None else None
        cursor = result.get("nextCursor") if isinstance(result, dict) else None
        if not isinstance(cursor, str):
            return


_COMPLETE = b',"resultType":"complete"}}'


def _final(request_id: Any, answer: Message, kind: Any) -> Message:
    """The peer's final answer under the client's id, without the result's ``resultType:
    "complete"`` (``kind``): a 2025-era client's schema lacks it (strict ones refuse it)."""
    same = answer.id == request_id and type(answer.id) is type(request_id)
    if kind == "complete":
        raw = answer.raw
        if raw.endswith(_COMPLETE) and raw.count(b'"resultType"') == 1 and b"\\u" not in raw:
            # As the SDKs write it: the last member of the last member. With no \u escape,
            # the result's own member is spelled so in the bytes; as the only one, it is this
            # one: cut from the bytes, nothing parsed or encoded again.
            view = answer.view
            result = dict(view["result"])
            del result["resultType"]
            answer = Message({**view, "result": result}, raw[:-len(_COMPLETE)] + b"}}")
        else:
            obj = answer.obj
            answer = Message({**obj, "result": {key: value for key, value
                                                in obj["result"].items() if key != "resultType"}})
    return answer if same else jsonrpc.with_id(answer, request_id)


def _check(bridge, requests: Any) -> None:
    if not isinstance(requests, dict) or not requests:
        raise CannotCarry(f"the {bridge.peer} answered input_required without inputRequests")
    if len(requests) > MAX_REQUESTS:
        raise CannotCarry(f"the {bridge.peer} asked for {len(requests)} inputs in one round; "
                          f"mcp-proxy carries at most {MAX_REQUESTS}")
    declared = bridge.client.get("capabilities")
    declared = declared if isinstance(declared, dict) else {}
    for request in requests.values():
        method = request.get("method") if isinstance(request, dict) else None
        needed = CAPABILITY_OF.get(method)
        if needed is None:
            raise CannotCarry(f"the {bridge.peer} asked for input by {method!r}, which "
                              f"mcp-proxy cannot put to a 2025-era client")
        if needed not in declared:
            raise CannotCarry(f"the {bridge.peer} needs the client capability {needed!r} "
                              f"({method}), which the client did not declare",
                              MISSING_CAPABILITY,
                              {"requiredCapabilities": {needed: {}}})
        params = request.get("params")
        if method == "elicitation/create" and isinstance(params, dict) \
                and params.get("mode") == "url":
            raise CannotCarry(f"the {bridge.peer} asked for URL-mode elicitation, whose outcome a "
                              "2025-era client cannot bring back through mcp-proxy")


def _ask_client(bridge, method: str, params: Any) -> tuple[str, AsyncResult]:
    """Put one input request to the client, under an id of ours; its id and waiter."""
    ask_id = bridge.next_id("in")
    waiter = bridge.asks[id_key(ask_id)] = AsyncResult()
    request = {"jsonrpc": "2.0", "id": ask_id, "method": method}
    if params is not None:
        request["params"] = params
    bridge.deliver_unless_closed(Message(request))
    return ask_id, waiter


def _ask(bridge, requests: Any) -> dict:
    """Ask the client one round's input requests at once; their results by key."""
    _check(bridge, requests)
    asked = {key: _ask_client(bridge, request["method"], request.get("params"))
             for key, request in requests.items()}
    done = False
    try:
        responses = {}
        for key, (_, waiter) in asked.items():
            try:
                reply = waiter.get(timeout=bridge.ask_timeout)
            except gevent.Timeout:
                raise CannotCarry(f"the client did not answer {requests[key]['method']} within "
                                  f"{bridge.ask_timeout:g} s") from None
            error = reply.error
            if error is not None:
                raise CannotCarry(f"the client refused {requests[key]['method']}: "
                                  f"{error.get('message')}",
                                  error.get("code", jsonrpc.INTERNAL_ERROR), error.get("data"))
            responses[key] = reply.obj.get("result")
        done = True
        return responses
    finally:
        for ask_id, waiter in asked.values():  # given up on: the client is told
            bridge.asks.pop(id_key(ask_id), None)
            if not done and not waiter.ready():
                bridge.deliver_unless_closed(Message({"jsonrpc": "2.0",
                                                      "method": "notifications/cancelled",
                                                      "params": {"requestId": ask_id}}))
