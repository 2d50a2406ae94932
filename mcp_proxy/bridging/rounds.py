"""One 2025-era client request carried to a 2026-07-28 server, ``input_required`` rounds
included (SEP-2322, SESSIONS.md §A.5, §A.6 (2a)): a client mode remote or a server mode child.

A round's ``inputRequests`` (sampling, elicitation, roots) are put to the 2025-era client as
ordinary server-to-client requests with ids of ours (``mcp-proxy-in-<n>``); their results go
back in a retry of the original request under a new id, with ``inputResponses`` and the
``requestState`` echoed verbatim. The client's own id gets the final answer, without
``resultType: "complete"``. What the legacy flow cannot carry is refused with
``errors.CannotCarry``, which the bridge turns into a JSON-RPC error that says why: never
guessed at. It only drives: its requests go out through the bridge's ``leg`` and
``ask_client`` (legacy_face.py), it touches no wire.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import CannotCarry

logger = logging.getLogger(__name__)

MAX_ROUNDS = 10
MAX_REQUESTS = 8  # per round (both limits as in mcp-remote)
MISSING_CAPABILITY = -32021
HEADER_MISMATCH = -32020
CAPABILITY_OF = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                 "roots/list": "roots"}


def drive(bridge, message: Message) -> Message:
    """The final answer to the client's ``message`` (its own id), after every round."""
    params = dict(message.obj.get("params") or {})
    rounds, refreshed = 0, False
    while True:
        answer = bridge.leg(message.method, params, here=True)
        if answer is None:
            raise CannotCarry("the request was stopped")
        if (answer.error or {}).get("code") == HEADER_MISMATCH \
                and message.method == "tools/call" and not refreshed:
            refreshed = True  # the tool's x-mcp-header annotations may have changed: once
            logger.info("the %s refused a tools/call's headers; listing tools again", bridge.peer)
            _list_tools(bridge)
            continue
        result = answer.obj.get("result")
        if not isinstance(result, dict) or result.get("resultType") != "input_required":
            return _final(message.id, answer, result)
        if rounds == MAX_ROUNDS:
            raise CannotCarry(f"the {bridge.peer} asked for input more than {MAX_ROUNDS} times "
                              f"for one {message.method}; mcp-proxy gave up")
        rounds += 1
        responses = _ask(bridge, result.get("inputRequests"))
        params = {**(message.obj.get("params") or {}), "inputResponses": responses}
        if "requestState" in result:
            params["requestState"] = result["requestState"]


def _list_tools(bridge) -> None:
    """List the peer's tools (up to 10 pages): the upstream learns their headers."""
    cursor = None
    for _ in range(10):
        answer = bridge.leg("tools/list", {"cursor": cursor} if cursor else {}, here=True)
        result = answer.obj.get("result") if answer is not None else None
        cursor = result.get("nextCursor") if isinstance(result, dict) else None
        if not isinstance(cursor, str):
            return


def _final(request_id: Any, answer: Message, result: Any) -> Message:
    obj = {**answer.obj, "id": request_id}
    if isinstance(result, dict) and result.get("resultType") == "complete":
        obj["result"] = {key: value for key, value in result.items() if key != "resultType"}
    return Message(obj)


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


def _ask(bridge, requests: Any) -> dict:
    """Ask the client one round's input requests at once; their results by key."""
    _check(bridge, requests)
    asked = {key: bridge.ask_client(request["method"], request.get("params"))
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
        bridge.forget_asks([ask_id for ask_id, _ in asked.values()], cancel=not done)
