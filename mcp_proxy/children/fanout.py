"""Where each message from a shared child goes (SESSIONS.md §C.3); the multiplexer's other half.

- an answer: to the client whose request it is, with the client's id restored (or to the
  proxy's own waiter);
- progress: to the request that owns the token, with the client's token restored;
- a log line: to every client whose level admits it;
- ``resources/updated``: to the clients subscribed to that URI;
- ``notifications/cancelled`` of the child's own server request: to the client it went to;
- any other notification (``list_changed``, unknown ones): to every client;
- a server request: ``ping`` is answered here; anything else goes to the one client with
  requests in flight if it declared what the request needs, else the child gets an error.
  Never a guess: a misrouted elicitation would show one user's prompt to another.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, rewritten, with_id
from mcp_proxy.errors import LinkClosed, ServerBusy

if TYPE_CHECKING:
    from mcp_proxy.children.multiplexer import Multiplexer
    from mcp_proxy.children.port import Port

logger = logging.getLogger(__name__)


def route(mux: Multiplexer, message: Message) -> None:
    if message.kind == jsonrpc.RESPONSE:
        answer(mux, message)
    elif message.kind == jsonrpc.REQUEST:
        _server_request(mux, message)
    else:
        notification(mux, message)


# how long a cancelled request's handler may still ask its client something (the variable
# is internal: the tests shorten it)
DRAIN = float(os.environ.get("MCP_PROXY_CANCEL_DRAIN", "10"))
_DRAINING_MAX = 1024  # cancelled requests remembered per child (the oldest go first)


def drain(mux: Multiplexer, port: Port, child_id: int) -> None:
    """A cancelled request: freed, but its client stays the one a server request can be for
    until the server answers it or ``DRAIN`` seconds pass (a server may run a cancelled
    handler on: its sampling must not go to another client that happens to be alone)."""
    now = time.monotonic()
    for stale in [cid for cid, (_, until) in mux.cancelled.items() if until < now]:
        del mux.cancelled[stale]
    while len(mux.cancelled) >= _DRAINING_MAX:
        del mux.cancelled[next(iter(mux.cancelled))]
    mux.cancelled[child_id] = (port, now + DRAIN)


def _busy(mux: Multiplexer) -> list[Port]:
    now = time.monotonic()
    draining = {port for port, until in mux.cancelled.values() if until >= now}
    return [port for port in mux.ports if port.inflight or port in draining]


def answer(mux: Multiplexer, message: Message) -> None:
    cid = message.id
    call = mux.calls.pop(cid, None) if isinstance(cid, int) else None
    if call is None:
        if isinstance(cid, int):
            mux.cancelled.pop(cid, None)  # its handler has ended
        logger.info("%s: an answer to no request in flight (%r; cancelled, or its client "
                    "left); dropped", mux.name, cid)
    elif call.waiter is not None:
        call.waiter.set(message)
    else:
        call.port.inflight.pop(id_key(call.original), None)
        call.port.offer(with_id(message, call.original))


def notification(mux: Multiplexer, message: Message) -> None:
    method = message.method
    params = message.params
    if method == "notifications/progress":
        call = mux.calls.get(params.get("progressToken"))
        if call is not None and call.port is not None:
            call.port.offer(rewritten(message, params={"progressToken": call.token}))
        return
    if method == "notifications/cancelled":
        child_id = params.get("requestId")
        for port in mux.ports:
            for key, original in list(port.server_requests.items()):
                if original == child_id and type(original) is type(child_id):
                    del port.server_requests[key]
                    port.offer(rewritten(message, params={"requestId": key[1]}))
                    return
        return
    if method == "notifications/message":
        ports = [p for p in mux.ports if p.admits(params.get("level"))]
    elif method == "notifications/resources/updated":
        ports = [p for p in mux.ports if params.get("uri") in p.subscriptions]
    else:
        ports = list(mux.ports)
    for port in ports:
        port.offer(message)


def _server_request(mux: Multiplexer, message: Message) -> None:
    if message.method == "ping":
        reply(mux, result_message(message.id, {}))
        return
    busy = _busy(mux)
    if len(busy) == 1 and busy[0].can_take(message.method):
        port = busy[0]
        client_id = port.server_id()
        port.server_requests[id_key(client_id)] = message.id
        if port.offer(rewritten(message, id=client_id)):
            return
        del port.server_requests[id_key(client_id)]
    if not busy:
        why = "no client has a request in flight"
    elif len(busy) > 1:
        why = f"{len(busy)} clients have requests in flight (or cancelled within {DRAIN:g} s)"
    else:
        why = "the client with a request in flight did not declare that capability"
    logger.info("%s: refused the server's %s: %s", mux.name, message.method, why)
    reply(mux, jsonrpc.error_message(
        message.id, jsonrpc.INTERNAL_ERROR,
        f"server request cannot be attributed on a shared child: {why}"))


def reply(mux: Multiplexer, message: Message) -> None:
    try:
        mux.send(message)
    except (LinkClosed, ServerBusy) as exc:
        logger.info("%s: could not answer the server (%s)", mux.name, exc)
