"""Combiner: one client session's link to a combined server, made of its members' links.

A combined server (``{"servers": ["a", "b"]}`` in the config file) is served like any other,
but a session's upstream is a :class:`Combiner` in front of one link per member: the link the
supervisor hands any session of that member (its own child, or a port of the member's shared
child; a remote upstream will be one more link). The combiner is the only place that reads
and rewrites list results and routes by name (DESIGN.md §3.1); what it routes keeps its bytes
except the id, the name and the cursor.

- ``initialize`` opens every member (each gets the client's own ``initialize``) and answers
  the union (``combined_lists.py``); ``ping`` and ``logging/setLevel`` go to every open member
  and are answered once, when all have;
- the lists go to every member that offers them; their pages are merged, names prefixed
  (``combined_names.py``), and the cursor names each member's own;
- calls, gets, reads, subscriptions and ``completion/complete`` go to the member that owns the
  name or URI under an id of the combiner's own (restored on the answer); a URI nobody listed
  is tried on each member in turn until one answers it; cancellations follow their request;
- a member's own requests (sampling, elicitation, roots) reach this client under an id of the
  combiner's, and the answer goes back to that member with the member's id.

A member that ends (its child crashed) answers its calls in flight with an error, loses its
names, and the client gets ``list_changed``; it is started again with backoff
(``combined_members.py``) and, once back, ``list_changed`` again. A shared member's child is
restarted by its multiplexer, which tells the port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp_proxy.children.combined_lists import LISTS, Gather, initialize_result, page
from mcp_proxy.children.combined_members import Call, Members
from mcp_proxy.children.combined_names import Names, unseal
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key, result_message, rewritten, with_id
from mcp_proxy.core.link import Link
from mcp_proxy.core.tool_filter import UNKNOWN_TOOL, ToolFilter
from mcp_proxy.errors import LinkClosed, ServerBusy

logger = logging.getLogger(__name__)

INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
_BROADCAST = ("ping", "logging/setLevel")
_BY_NAME = {"tools/call": ("tools/list", "tool"), "prompts/get": ("prompts/list", "prompt")}
_BY_URI = ("resources/read", "resources/subscribe", "resources/unsubscribe")


class Combiner(Members, Link):
    """A client session's end of a combined server (see the module docstring)."""

    def __init__(self, server: str, spec: ServerSpec, open_member: Callable[[str, str], Link],
                 name: str) -> None:
        Link.__init__(self, name)
        self.server = server or "default"
        self.order = list(spec.members)
        prefixes = {member: spec.prefix(member) for member in self.order}
        self.names = {"tools/list": Names("tool", prefixes),
                      "prompts/list": Names("prompt", prefixes),
                      "resources/list": Names("resource", None),
                      "resources/templates/list": Names("resource template", None)}
        self.tool_filter = ToolFilter(spec.tools) if spec.tools else None
        self.calls: dict[int, Call] = {}
        self.inflight: dict[tuple, int] = {}  # id_key(client's id) -> the member's id
        self.server_requests: dict[tuple, tuple[str, Any]] = {}  # ours -> (member, its id)
        Members.__init__(self, open_member)

    # -- from the client -------------------------------------------------------------------

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        kind = message.kind
        if kind == jsonrpc.RESPONSE:
            held = self.server_requests.pop(id_key(message.id), None)
            if held is not None:
                self.send_member(held[0], with_id(message, held[1]))
            return
        if kind == jsonrpc.NOTIFICATION:
            self._client_notification(message)
            return
        if self.tool_filter is not None:
            passed = self.tool_filter.request(message)
            if passed is None:  # hidden by the combined server's own filter
                self.deliver_if_open(self.tool_filter.refusal(message))
                return
            message = passed
        method, params = message.method, message.params
        if method == "initialize":  # members may take a minute to start (npx): not in the
            # deliverer's greenlet, which an HTTP+SSE POST waits on for its 202
            greenlets.spawn(self.initialize, message, name=f"{self.name} initialize")
        elif method in LISTS:
            self._list(message)
        elif method in _BROADCAST:
            if method == "logging/setLevel":
                self.level = params.get("level")
            done = lambda gather: self.deliver_if_open(result_message(gather.original, {}))  # noqa: E731
            self._gather(message, [m for m in self.order if self.is_up(m)], done)
        elif method in _BY_NAME:
            self._by_name(message, params.get("name"), lambda original: {"name": original})
        elif method in _BY_URI:
            self._by_uri(message, params.get("uri"), "resources/list")
        elif method == "completion/complete" and isinstance(params.get("ref"), dict):
            ref = params["ref"]
            if ref.get("type") == "ref/prompt":
                self._by_name(message, ref.get("name"),
                              lambda original: {"ref": {**ref, "name": original}}, "prompts/get")
            else:
                self._by_uri(message, ref.get("uri"), "resources/templates/list")
        else:
            self._refuse(message, METHOD_NOT_FOUND, f"Method not found: {method}"[:200])

    def _client_notification(self, message: Message) -> None:
        method = message.method
        if method == "notifications/cancelled":
            cid = self.inflight.pop(id_key(message.params.get("requestId")), None)
            call = self.calls.pop(cid, None) if cid is not None else None
            if call is not None:
                self.send_member(call.member, rewritten(message, params={"requestId": cid}))
        elif method != "notifications/initialized":  # each member had its own at its start
            for member in self.order:
                if self.is_up(member):
                    self.send_member(member, message)

    def _refuse(self, message: Message, code: int, text: str) -> None:
        self.deliver_if_open(jsonrpc.error_message(message.id, code, text))

    def _list(self, message: Message) -> None:
        method = message.method
        cursor = message.params.get("cursor")
        if cursor is None:
            capability = LISTS[method][1]
            pages = {m: None for m in self.order if self.offers(m, capability)}
        else:
            pages = unseal(method, cursor)
            if pages is None or not set(pages) <= set(self.order):
                self._refuse(message, INVALID_PARAMS,
                             "Invalid params: a cursor this server did not give")
                return
        params = {k: v for k, v in message.params.items() if k != "cursor"}

        def done(gather: Gather) -> None:
            body = page(method, gather.results(list(pages)), self.names[method])
            self.deliver_if_open(result_message(gather.original, body))

        asked = [m for m in pages if self.ensure(m)]
        self._gather(message, asked, done,
                     lambda m: {**params, "cursor": pages[m]} if pages[m] else params)

    def _gather(self, message: Message, members: list[str], done: Callable[[Gather], None],
                params_of: Callable[[str], dict] | None = None) -> None:
        gather = Gather(message.id, message.method, members, done)
        for member in members:
            cid = self.new_id()
            self.calls[cid] = Call(member, message.id, gather=gather)
            params = message.params if params_of is None else params_of(member)
            sent = Message({"jsonrpc": "2.0", "id": cid, "method": message.method,
                            "params": params})
            if not self.send_member(member, sent):
                self.calls.pop(cid, None)
                gather.add(member, None)

    def _by_name(self, message: Message, name: Any, params_of: Callable[[str], dict],
                 method: str | None = None) -> None:
        lists, kind = _BY_NAME[method or message.method]
        held = self.names[lists].resolve(name, self.order)
        if held is None:
            shown = name if isinstance(name, str) else jsonrpc.encode(name).decode()
            self._refuse(message, UNKNOWN_TOOL, f"Unknown {kind}: {shown[:200]}")
            return
        member, original = held
        self.forward([member], message, None if original == name else params_of(original))

    def _by_uri(self, message: Message, uri: Any, lists: str) -> None:
        if not isinstance(uri, str):
            self._refuse(message, INVALID_PARAMS, "Invalid params: no uri")
            return
        held = self.names[lists].owner.get(uri)
        self.forward([held[0]] if held else self.order, message, None)

    def forward(self, members: list[str], message: Message, params: dict | None) -> None:
        """Send a client's request to the first of ``members`` that is up, under our id."""
        for index, member in enumerate(members):
            if not self.ensure(member):
                continue
            cid = self.new_id()
            self.calls[cid] = Call(member, message.id, retry=(message, params,
                                                              members[index + 1:]))
            self.inflight[id_key(message.id)] = cid
            try:
                if self.send_member(member, rewritten(message, params, id=cid) if params
                                  else with_id(message, cid), busy=True):
                    return
            except ServerBusy:
                self.calls.pop(cid, None)
                self.inflight.pop(id_key(message.id), None)
                raise
            self.calls.pop(cid, None)
            self.inflight.pop(id_key(message.id), None)
        down = ", ".join(f"{m} ({self.slots[m].failure or 'down'})" for m in members)
        self._refuse(message, jsonrpc.INTERNAL_ERROR,
                     f"combined server {self.server}: member unavailable: {down}"[:500])

    # -- from a member ---------------------------------------------------------------------

    def from_member(self, member: str, message: Message) -> None:
        kind = message.kind
        if kind == jsonrpc.RESPONSE:
            mid = message.id
            call = self.calls.pop(mid, None) if isinstance(mid, int) else None
            if call is None:
                logger.info("%s: an answer of %s to no request in flight (%r); dropped",
                            self.name, member, mid)
            elif call.waiter is not None:
                call.waiter.set(message)
            elif call.gather is not None:
                call.gather.add(member, message)
            elif "error" in message.obj and call.retry and call.retry[2]:
                self.forward(call.retry[2], call.retry[0], call.retry[1])
            else:
                self.inflight.pop(id_key(call.original), None)
                self.deliver_if_open(with_id(message, call.original))
        elif kind == jsonrpc.REQUEST:
            if message.method == "ping":
                self.send_member(member, result_message(message.id, {}))
                return
            ours = self.new_id()
            self.server_requests[id_key(ours)] = (member, message.id)
            self.deliver_if_open(rewritten(message, id=ours))
        else:
            method, params = message.method, message.params
            if method == "notifications/cancelled":
                for key, held in list(self.server_requests.items()):
                    if held[0] == member and held[1] == params.get("requestId"):
                        del self.server_requests[key]
                        self.deliver_if_open(rewritten(message, params={"requestId": key[1]}))
                return
            if method.endswith("/list_changed"):
                for lists in LISTS:
                    if lists.startswith(method[len("notifications/"):-len("/list_changed")]):
                        self.names[lists].forget(member)
            self.deliver_if_open(message)

    def deliver_if_open(self, message: Message) -> None:
        if self.tool_filter is not None and message.kind == jsonrpc.RESPONSE:
            message = self.tool_filter.answer(message)
        try:
            self.deliver(message)
        except LinkClosed:
            pass

    def lost(self, member: str, reason: str) -> None:
        """``member`` ended or its child died: answer its calls, forget its names."""
        text = f"combined server {self.server}: member {member} failed: {reason}"[:500]
        for cid, call in list(self.calls.items()):
            if call.member != member or self.calls.pop(cid, None) is None:
                continue
            if call.waiter is not None:
                call.waiter.set_exception(LinkClosed(reason))
            elif call.gather is not None:
                call.gather.add(member, None)
            else:
                self.inflight.pop(id_key(call.original), None)
                self.deliver_if_open(jsonrpc.error_message(call.original, jsonrpc.INTERNAL_ERROR,
                                                     text))
        for key, held in list(self.server_requests.items()):
            if held[0] == member:
                del self.server_requests[key]
        for names in self.names.values():
            names.forget(member)

    def answer_initialize(self, message: Message, results: list[tuple[str, dict]]) -> None:
        asked = message.params.get("protocolVersion")
        self.deliver_if_open(result_message(message.id, initialize_result(self.server, results,
                                                                    asked)))
