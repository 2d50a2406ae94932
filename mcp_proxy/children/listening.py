"""``subscriptions/listen`` on the modern->legacy bridge: a 2025-era child's change
notifications, delivered to its 2026-07-28 callers' listen streams.

:class:`Listening` is a mixin of ``legacy_adapter.LegacySession`` (it never imports it). A
listen request never reaches the child:

- it is acknowledged here (``notifications/subscriptions/acknowledged``) with the part of
  its filter the child's capabilities allow (``listChanged`` per list, ``subscribe`` for
  ``resourceSubscriptions``), and its stream stays open until the client closes it;
- each URI of ``resourceSubscriptions`` is held by the port; the child gets
  ``resources/subscribe`` only for its first holder and ``resources/unsubscribe`` when the
  last one lets go (the multiplexer's reference counting, as for 2025-era sessions); the
  acknowledgement waits for those subscribes to be answered, so that a change the client
  makes once acknowledged is heard (a remote's POSTs are not ordered as a pipe's writes are);
- the child's ``notifications/{tools,prompts,resources}/list_changed`` go to the listens
  that asked for them, ``notifications/resources/updated`` to those holding its URI, each
  with ``_meta.subscriptionId`` = the listen's own request id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent

from mcp_proxy.children.sharing import Sharing
from mcp_proxy.core import greenlets
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import SUBSCRIPTION_KEY
from mcp_proxy.errors import LinkClosed, ProxyError

LISTEN_METHOD = "subscriptions/listen"
# filter key -> (the child's capability, its flag, the notification it admits)
_LISTS = {"toolsListChanged": ("tools", "listChanged", "notifications/tools/list_changed"),
          "promptsListChanged": ("prompts", "listChanged", "notifications/prompts/list_changed"),
          "resourcesListChanged": ("resources", "listChanged",
                                   "notifications/resources/list_changed")}
LISTENED = frozenset(method for _, _, method in _LISTS.values()) | {
    "notifications/resources/updated"}
MAX_URIS = 1000  # resourceSubscriptions of one listen
SUBSCRIBE_TIMEOUT = 30.0  # a first holder's resources/subscribe, answered before the ack

logger = logging.getLogger(__name__)


class Listening:
    """The bridge's listen streams (see the module docstring)."""

    # what LegacySession provides
    name: str
    sharing: Sharing
    init_result: dict | None
    state: str
    background: Callable[[str, dict], None]
    _request: Callable[[str, dict, float], dict]

    def _offers(self, feature: str, flag: str) -> bool:
        capability = ((self.init_result or {}).get("capabilities") or {}).get(feature)
        return isinstance(capability, dict) and capability.get(flag) is True

    def listen(self, port: Any, message: Message) -> None:
        """Acknowledge a listen with what the child can give; hold its resource URIs."""
        asked = message.params.get("notifications")
        asked = asked if isinstance(asked, dict) else {}
        granted: dict = {key: True for key, (feature, flag, _) in _LISTS.items()
                         if asked.get(key) is True and self._offers(feature, flag)}
        uris = asked.get("resourceSubscriptions")
        first: list[str] = []  # the URIs this listen is the first to hold
        if isinstance(uris, list) and self._offers("resources", "subscribe"):
            held = [uri for uri in dict.fromkeys(uris) if isinstance(uri, str)][:MAX_URIS]
            for uri in held:
                if uri not in port.subscriptions:
                    port.subscriptions.add(uri)
                    if not self.sharing.subscribe(uri):
                        first.append(uri)
            granted["resourceSubscriptions"] = held
        port.listening = (message.id, {_LISTS[key][2] for key in granted if key in _LISTS})
        acknowledged = Message({
            "jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": granted, "_meta": {SUBSCRIPTION_KEY: message.id}}})
        if not first or self.state != "running":  # not running: replayed when it starts
            for uri in first:
                self.background("resources/subscribe", {"uri": uri})
            port.deliver_if_open(acknowledged)
            return

        def subscribe(uri: str) -> None:
            try:
                self._request("resources/subscribe", {"uri": uri}, SUBSCRIBE_TIMEOUT)
            except (ProxyError, LinkClosed) as exc:
                logger.warning("%s: resources/subscribe failed: %s", self.name, exc)

        def subscribe_then_acknowledge() -> None:  # all at once: one bound for the lot
            gevent.joinall([greenlets.spawn(subscribe, uri, name=f"{self.name} subscribe")
                            for uri in first], timeout=SUBSCRIBE_TIMEOUT + 1)
            port.deliver_if_open(acknowledged)

        greenlets.spawn(subscribe_then_acknowledge, name=f"{self.name} listen")

    def route_listened(self, message: Message) -> None:
        """A change notification of the child, to the listens that asked for it."""
        uri = message.params.get("uri")
        for port in list(self.sharing.ports):
            listening = getattr(port, "listening", None)
            if listening is None:
                continue
            listen_id, methods = listening
            if message.method in methods or (
                    message.method == "notifications/resources/updated"
                    and uri in port.subscriptions):
                params = message.obj.get("params")
                params = params if isinstance(params, dict) else {}
                meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
                port.deliver_if_open(Message({**message.obj, "params": {
                    **params, "_meta": {**meta, SUBSCRIPTION_KEY: listen_id}}}))
