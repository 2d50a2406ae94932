"""Client -> shared child: what each message a client sends becomes (SESSIONS.md §C.1, §C.2).

:class:`FanIn` is the inbound half of the :class:`~mcp_proxy.children.multiplexer.Multiplexer`
(a mixin it inherits; it never imports the multiplexer): what a port sends is routed here.
The calls and subscriptions it opens are kept by :class:`~mcp_proxy.children.sharing.Sharing`.

- ``initialize`` is answered from the child's cached result (the child is started first if
  it is not running); ``notifications/initialized`` is not sent on;
- a request gets the next id of the child's counter, and its ``_meta.progressToken`` becomes
  that id; the answer comes back through ``fanout.py`` with the client's own id and token;
- ``notifications/cancelled`` is sent on only for the client's own requests in flight, and
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
from collections.abc import Callable

from mcp_proxy.children.sharing import Member, Sharing
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, rewritten, with_id
from mcp_proxy.core.protocol import LEGACY_VERSIONS, LOG_LEVEL_KEY
from mcp_proxy.errors import LinkClosed, ServerBusy, SpawnError

logger = logging.getLogger(__name__)


class FanIn:
    """The multiplexer's inbound routing: a client's message, rewritten for the shared child."""

    # what the multiplexer provides
    name: str
    state: str
    init_result: dict | None
    sharing: Sharing
    send: Callable[[Message], None]
    ensure_started: Callable[[], None]
    sync_level: Callable[[], None]

    def route(self, port: Member, message: Message) -> None:
        """Relay a message a client sent, rewritten for the shared child."""
        method = message.method
        if message.kind == jsonrpc.RESPONSE:
            child_id = port.server_requests.pop(id_key(message.id), None)
            if child_id is None:
                logger.info("%s: dropped an answer to no server request (%r)", port.name,
                            message.id)
            else:
                self.send(rewritten(message, id=child_id))
        elif message.kind == jsonrpc.NOTIFICATION:
            if method == "notifications/cancelled":
                # freed at once: a server may never answer a cancelled request (the TypeScript
                # SDK does not), and one left in flight would make every later server request
                # unattributable; a late answer then finds no call and is dropped
                child_id = port.inflight.pop(id_key(message.params.get("requestId")), None)
                if child_id is not None:  # only the client's own requests
                    self.sharing.close_call(child_id)
                    self.sharing.drain(port, child_id)
                    self.send(rewritten(message, params={"requestId": child_id}))
            elif method == "notifications/initialized":
                pass  # the proxy initialized the child itself
            elif self.state != "running":
                logger.info("%s: server not running; dropped %r", port.name, message)
            else:
                self.send(message)
        elif method == "initialize":
            self._answer_initialize(port, message)
        elif method == "logging/setLevel":
            port.level = message.params.get("level")
            port.deliver_if_open(result_message(message.id, {}))
            self.sync_level()
        elif method == "resources/subscribe" and self._held_elsewhere(port, message):
            port.deliver_if_open(result_message(message.id, {}))
        elif method == "resources/unsubscribe" and self._still_held(port, message):
            port.deliver_if_open(result_message(message.id, {}))
        else:
            self.route_request(port, message)

    def started_for(self, port: Member, message: Message) -> bool:
        """Start the child if it is not running; if it cannot be, the client's request gets
        the error. Whether it runs."""
        try:
            self.ensure_started()
        except SpawnError as exc:
            port.deliver_if_open(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR,
                                                       str(exc)))
            return False
        return True

    def _answer_initialize(self, port: Member, message: Message) -> None:
        if not self.started_for(port, message):
            return
        port.capabilities = message.params.get("capabilities") or {}
        port.version = asked = message.params.get("protocolVersion")
        result = copy.deepcopy(self.init_result)
        # a client that asked for an older 2025-era version gets it, as a server that
        # supports it answers: the child speaks a newer one, whose messages a relay passes on
        if asked in LEGACY_VERSIONS and asked < result.get("protocolVersion", ""):
            result["protocolVersion"] = asked
        port.deliver_if_open(result_message(message.id, result))

    def route_request(self, port: Member, message: Message, params: dict | None = None) -> bool:
        """Send a client's request to the child under the next id (its progress token too,
        and ``params`` entries replaced); the client gets an error if the child cannot take
        it. Whether it was sent."""
        if message.method.startswith("notifications/"):
            # a server may act on the method alone: a cancel sent as a request would reach it
            # with another client's requestId, which only a notification gets mapped
            port.deliver_if_open(jsonrpc.error_message(
                message.id, jsonrpc.INVALID_REQUEST,
                f"Invalid Request: {message.method} takes no id"))
            return False
        if not self.started_for(port, message):
            return False
        meta = message.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        level = meta.get(LOG_LEVEL_KEY) if isinstance(meta, dict) else None
        sharing = self.sharing
        cid = sharing.open_call(port, message.id, token, method=message.method, level=level)
        new_params = dict(params or {})
        if token is not None:
            new_params["_meta"] = {**message.obj["params"]["_meta"], "progressToken": cid}
        port.inflight[id_key(message.id)] = cid
        try:
            self.send(rewritten(message, new_params, id=cid) if new_params
                      else with_id(message, cid))
        except (LinkClosed, ServerBusy) as exc:
            sharing.close_call(cid)
            port.inflight.pop(id_key(message.id), None)
            if isinstance(exc, ServerBusy):
                raise
            port.deliver_if_open(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR,
                                                       f"MCP server unavailable: {exc}"))
            return False
        return True

    # -- subscriptions ---------------------------------------------------------------------

    def _held_elsewhere(self, port: Member, message: Message) -> bool:
        """Count a subscription; True if someone else already holds it (answered here)."""
        uri = message.params.get("uri")
        if not isinstance(uri, str) or uri in port.subscriptions:
            return isinstance(uri, str)
        port.subscriptions.add(uri)
        return self.sharing.subscribe(uri)

    def _still_held(self, port: Member, message: Message) -> bool:
        """Drop a subscription; True if someone else still holds it (answered here)."""
        uri = message.params.get("uri")
        if not isinstance(uri, str) or uri not in port.subscriptions:
            return isinstance(uri, str)
        port.subscriptions.discard(uri)
        # the last hold: the client's own request goes on to the child
        return not self.sharing.drop_subscription(uri)
