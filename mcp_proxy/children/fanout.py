"""Shared child -> clients: where each message the child sends goes (SESSIONS.md §C.3).

:class:`FanOut` is the outbound half of the :class:`~mcp_proxy.children.multiplexer.Multiplexer`
(a mixin it inherits; it never imports the multiplexer); the calls it closes are kept by
:class:`~mcp_proxy.children.sharing.Sharing`.

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
from collections.abc import Callable

from mcp_proxy.children.sharing import DRAIN, Sharing
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, rewritten, with_id
from mcp_proxy.errors import LinkClosed, ServerBusy

logger = logging.getLogger(__name__)


class FanOut:
    """The multiplexer's outbound routing: what the shared child sends, to its clients."""

    # what the multiplexer provides
    name: str
    sharing: Sharing
    send: Callable[[Message], None]

    def route_outbound(self, message: Message) -> None:
        """Route a message the child sent (the child link delivers here)."""
        if message.kind == jsonrpc.RESPONSE:
            self.route_answer(message)
        elif message.kind == jsonrpc.REQUEST:
            self._route_server_request(message)
        else:
            self.route_notification(message)

    def route_answer(self, message: Message) -> None:
        """An answer of the child: to the client that asked, under its own id."""
        cid = message.id
        call = self.sharing.close_call(cid) if isinstance(cid, int) else None
        if call is None:
            if isinstance(cid, int):
                self.sharing.drained(cid)  # its handler has ended
            logger.info("%s: an answer to no request in flight (%r; cancelled, or its client "
                        "left); dropped", self.name, cid)
        elif call.waiter is not None:
            call.waiter.set(message)
        else:
            call.port.inflight.pop(id_key(call.original), None)
            call.port.deliver_if_open(with_id(message, call.original))

    def route_notification(self, message: Message) -> None:
        """A notification of the child: to the request, the subscribers or every client."""
        method = message.method
        params = message.params
        sharing = self.sharing
        if method == "notifications/progress":
            call = sharing.calls.get(params.get("progressToken"))
            if call is not None and call.port is not None:
                call.port.deliver_if_open(rewritten(message,
                                                    params={"progressToken": call.token}))
            return
        if method == "notifications/cancelled":
            child_id = params.get("requestId")
            for port in sharing.ports:
                for key, original in list(port.server_requests.items()):
                    if original == child_id and type(original) is type(child_id):
                        del port.server_requests[key]
                        port.deliver_if_open(rewritten(message, params={"requestId": key[1]}))
                        return
            return
        if method == "notifications/message":
            ports = [p for p in sharing.ports if p.admits(params.get("level"))]
        elif method == "notifications/resources/updated":
            ports = [p for p in sharing.ports if params.get("uri") in p.subscriptions]
        else:
            ports = list(sharing.ports)
        for port in ports:
            port.deliver_if_open(message)

    def _route_server_request(self, message: Message) -> None:
        if message.method == "ping":
            self.answer_server(result_message(message.id, {}))
            return
        busy = self.sharing.busy()
        if len(busy) == 1 and busy[0].declares(message.method):
            port = busy[0]
            client_id = port.server_id()
            port.server_requests[id_key(client_id)] = message.id
            if port.deliver_if_open(rewritten(message, id=client_id)):
                return
            del port.server_requests[id_key(client_id)]
        if not busy:
            why = "no client has a request in flight"
        elif len(busy) > 1:
            why = f"{len(busy)} clients have requests in flight (or cancelled within {DRAIN:g} s)"
        else:
            why = "the client with a request in flight did not declare that capability"
        logger.info("%s: refused the server's %s: %s", self.name, message.method, why)
        self.answer_server(jsonrpc.error_message(
            message.id, jsonrpc.INTERNAL_ERROR,
            f"server request cannot be attributed on a shared child: {why}"))

    def answer_server(self, message: Message) -> None:
        """Answer a request of the child's own (a ping, or a server request refused here)."""
        try:
            self.send(message)
        except (LinkClosed, ServerBusy) as exc:
            logger.info("%s: could not answer the server (%s)", self.name, exc)
