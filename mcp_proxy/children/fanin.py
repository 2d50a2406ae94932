"""Client -> shared child: what each message a client sends becomes (SESSIONS.md §C.1, §C.2).

- ``initialize`` is answered from the child's cached result (the child is started first if
  it is not running); ``notifications/initialized`` is not forwarded;
- a request gets the next id of the child's counter, and its ``_meta.progressToken`` becomes
  that id; the answer comes back through fanout.py with the client's own id and token;
- ``notifications/cancelled`` is forwarded only for the client's own requests in flight, and
  frees the request here (a late answer is dropped); a ``notifications/...`` method with an
  id is refused (-32600);
- an answer to a server request gets back the child's id;
- ``logging/setLevel`` is answered here and sets this client's filter (the child gets the most
  verbose level of all clients); ``resources/subscribe`` and ``unsubscribe`` reach the child
  only for the first subscriber and the last, the others are answered here.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

from mcp_proxy.children import fanout
from mcp_proxy.children.port import Call
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, rewritten, with_id
from mcp_proxy.core.protocol import LEGACY_VERSIONS, LOG_LEVEL_KEY
from mcp_proxy.errors import LinkClosed, ServerBusy, SpawnError

if TYPE_CHECKING:
    from mcp_proxy.children.multiplexer import Multiplexer
    from mcp_proxy.children.port import Port

logger = logging.getLogger(__name__)


def route(mux: Multiplexer, port: Port, message: Message) -> None:
    """Relay a message a client sent, rewritten for the shared child."""
    method = message.method
    if message.kind == jsonrpc.RESPONSE:
        child_id = port.server_requests.pop(id_key(message.id), None)
        if child_id is None:
            logger.info("%s: dropped an answer to no server request (%r)", port.name,
                        message.id)
        else:
            mux.send(rewritten(message, id=child_id))
    elif message.kind == jsonrpc.NOTIFICATION:
        if method == "notifications/cancelled":
            # freed at once: a server may never answer a cancelled request (the TypeScript
            # SDK does not), and one left in flight would make every later server request
            # unattributable; a late answer then finds no call and is dropped
            child_id = port.inflight.pop(id_key(message.params.get("requestId")), None)
            if child_id is not None:  # only the client's own requests
                mux.calls.pop(child_id, None)
                fanout.drain(mux, port, child_id)
                mux.send(rewritten(message, params={"requestId": child_id}))
        elif method == "notifications/initialized":
            pass  # the proxy initialized the child itself
        elif mux.state != "running":
            logger.info("%s: server not running; dropped %r", port.name, message)
        else:
            mux.send(message)
    elif method == "initialize":
        _initialize(mux, port, message)
    elif method == "logging/setLevel":
        port.level = message.params.get("level")
        port.offer(result_message(message.id, {}))
        mux.sync_level()
    elif method == "resources/subscribe" and _local_subscribe(mux, port, message):
        port.offer(result_message(message.id, {}))
    elif method == "resources/unsubscribe" and _local_unsubscribe(mux, port, message):
        port.offer(result_message(message.id, {}))
    else:
        forward(mux, port, message)


def _initialize(mux: Multiplexer, port: Port, message: Message) -> None:
    try:
        mux.ensure_started()
    except SpawnError as exc:
        port.offer(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR, str(exc)))
        return
    port.capabilities = message.params.get("capabilities") or {}
    port.version = asked = message.params.get("protocolVersion")
    result = copy.deepcopy(mux.init_result)
    # a client that asked for an older 2025-era version gets it, as a server that supports it
    # answers: the child speaks a newer one, whose messages a relay passes on unchanged
    if asked in LEGACY_VERSIONS and asked < result.get("protocolVersion", ""):
        result["protocolVersion"] = asked
    port.offer(result_message(message.id, result))


def forward(mux: Multiplexer, port: Port, message: Message, params: dict | None = None) -> bool:
    """Send a client's request to the child under the next id (its progress token too, and
    ``params`` entries replaced); the client gets an error if the child cannot take it.
    Whether it was sent."""
    if message.method.startswith("notifications/"):
        # a server may act on the method alone: a cancel sent as a request would reach it
        # with another client's requestId, which only a notification gets mapped
        port.offer(jsonrpc.error_message(message.id, jsonrpc.INVALID_REQUEST,
                                         f"Invalid Request: {message.method} takes no id"))
        return False
    try:
        mux.ensure_started()
    except SpawnError as exc:
        port.offer(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR, str(exc)))
        return False
    cid = mux.new_id()
    meta = message.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    new_params = dict(params or {})
    if token is not None:
        new_params["_meta"] = {**message.obj["params"]["_meta"], "progressToken": cid}
    level = meta.get(LOG_LEVEL_KEY) if isinstance(meta, dict) else None
    mux.calls[cid] = Call(port, message.id, token, method=message.method, level=level)
    port.inflight[id_key(message.id)] = cid
    try:
        mux.send(rewritten(message, new_params, id=cid) if new_params else with_id(message, cid))
    except (LinkClosed, ServerBusy) as exc:
        mux.calls.pop(cid, None)
        port.inflight.pop(id_key(message.id), None)
        if isinstance(exc, ServerBusy):
            raise
        port.offer(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR,
                                         f"MCP server unavailable: {exc}"))
        return False
    return True


# -- subscriptions and log level ---------------------------------------------------


def _local_subscribe(mux: Multiplexer, port: Port, message: Message) -> bool:
    """Count a subscription; True if someone else already holds it (answered here)."""
    uri = message.params.get("uri")
    if not isinstance(uri, str) or uri in port.subscriptions:
        return isinstance(uri, str)
    port.subscriptions.add(uri)
    mux.subscribed[uri] = mux.subscribed.get(uri, 0) + 1
    return mux.subscribed[uri] > 1


def _local_unsubscribe(mux: Multiplexer, port: Port, message: Message) -> bool:
    """Drop a subscription; True if someone else still holds it (answered here)."""
    uri = message.params.get("uri")
    if not isinstance(uri, str) or uri not in port.subscriptions:
        return isinstance(uri, str)
    port.subscriptions.discard(uri)
    return not mux.drop_subscription(uri)  # the last hold: the client's own request goes on
