"""The one ``subscriptions/listen`` an era bridge holds for its 2025-era client.

The filter is what the 2026-07-28 peer's capabilities offer (tools, prompts and resources
``listChanged``) plus the resources the client subscribed to. The listen is reopened when the
filter changes (``listening`` is set again once the new one is acknowledged), and with
backoff when it drops, for as long as the session lasts: after five streams in a row that
each lived under 30 s (one warning) every 30 s. mcp-remote gives up there, and a remote away
for a minute then cost the client its notifications for the rest of its session. A listen the
peer refuses (method not found, invalid params) is asked again only once the filter changes:
the same one would be refused again. Its acknowledgement is consumed (the types not granted are
logged); the change notifications reach the client without the ``subscriptionId`` the 2025
era does not know. A listen reopened after a drop (the peer restarted, say) cannot tell what
changed while none was open, so its acknowledgement tells the client that everything it
listens to may have: a ``list_changed`` per list granted, a ``resources/updated`` per URI (a
client refetches; a spurious one costs a list).
"""

from __future__ import annotations

import logging

import gevent
from gevent.event import Event

from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import SUBSCRIPTION_KEY
from mcp_proxy.upstream.backoff import backoff

logger = logging.getLogger(__name__)

LISTED = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
          ("resources", "resourcesListChanged"))
SHORT_LIVED = 30.0
PATIENT_AFTER = 5  # streams in a row under SHORT_LIVED: from then on, one try per CAP
CAP = 30.0
REFUSED = (-32601, -32602)  # the peer will not hold this filter: wait for another


class Listener:
    """Holds the bridge's listen (see the module docstring)."""

    def __init__(self, bridge) -> None:
        self.bridge = bridge
        self.listen_id: str | None = None
        self.asked: dict = {}
        self.changed = Event()
        self.listening = Event()  # set once the listen of the current filter is acknowledged
        self.missed = False  # a listen dropped: the next one's acknowledgement catches up
        self._loop: gevent.Greenlet | None = None

    def filter(self) -> dict:
        capabilities = self.bridge.discovered.get("capabilities")
        capabilities = capabilities if isinstance(capabilities, dict) else {}
        wanted = {key: True for kind, key in LISTED
                  if isinstance(capabilities.get(kind), dict)
                  and capabilities[kind].get("listChanged")}
        if self.bridge.uris:
            wanted["resourceSubscriptions"] = sorted(self.bridge.uris)
        return wanted

    def start(self) -> None:
        if self._loop is None:
            self._loop = spawn(self._hold, name=f"{self.bridge.name}: listen",
                               on_error=closing(self.bridge))

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)

    def refilter(self) -> bool:
        """The filter may have changed: reopen the listen with the new one (True)."""
        if self.asked == self.filter():
            return False
        self.listening.clear()
        self.changed.set()
        if self.listen_id is not None:
            self.bridge.stop_leg(self.listen_id)
        return True

    def _hold(self) -> None:
        short = 0
        clock = gevent.get_hub().loop
        while True:
            self.changed.clear()
            self.asked = self.filter()
            if not self.asked:
                self.changed.wait()
                continue
            self.listen_id = self.bridge.next_id("listen")
            opened = clock.now()
            answer = self.bridge.leg("subscriptions/listen", {"notifications": self.asked},
                                     self.listen_id)
            self.listen_id = None
            if self.changed.is_set():
                short = 0
                continue
            self.missed = True
            error = (answer.error or {}) if answer is not None else {}
            why = error.get("message") if answer is not None else "stopped"
            if error.get("code") in REFUSED:
                logger.warning("the %s refused the listen (%s); no change notifications "
                               "until the client's subscriptions change", self.bridge.peer, why)
                self.changed.wait()
                short = 0
                continue
            short = short + 1 if clock.now() - opened < SHORT_LIVED else 0
            if short == PATIENT_AFTER:
                logger.warning("the %s's listen stream keeps ending (%s); trying again every "
                               "%g s", self.bridge.peer, why or "ended", CAP)
            else:
                logger.info("the %s's listen stream ended (%s); reopening", self.bridge.peer,
                            why or "ended")
            self.changed.wait(backoff(short + 2, cap=CAP))

    def consume(self, message: Message) -> bool:
        """Take a listen notification: True if it was handled here (or belongs to nobody)."""
        meta = message.params.get("_meta")
        listen = meta.get(SUBSCRIPTION_KEY) if isinstance(meta, dict) else None
        if listen is None:
            return False
        if listen != self.listen_id:
            logger.debug("dropped %r of a listen no longer open", message)
            return True
        params = dict(message.obj.get("params") or {})
        if message.method == "notifications/subscriptions/acknowledged":
            granted = params.get("notifications")
            granted = granted if isinstance(granted, dict) else {}
            missing = [key for key in self.asked if key not in granted]
            logger.info("listening to the %s for %s%s", self.bridge.peer,
                        ", ".join(sorted(granted)) or "nothing",
                        f" (not granted: {', '.join(missing)})" if missing else "")
            self.listening.set()
            if self.missed:
                self.missed = False
                self._catch_up(granted)
            return True
        rest = {key: value for key, value in params["_meta"].items() if key != SUBSCRIPTION_KEY}
        if rest:
            params["_meta"] = rest
        else:
            del params["_meta"]
        obj = {key: value for key, value in message.obj.items() if key != "params"}
        if params:
            obj["params"] = params
        self.bridge.deliver_unless_closed(Message(obj))
        return True

    def _catch_up(self, granted: dict) -> None:
        """What changed while no listen was open: possibly everything it listens to."""
        told = [{"method": f"notifications/{kind}/list_changed"} for kind, key in LISTED
                if granted.get(key)]
        if "resourceSubscriptions" in granted:
            told += [{"method": "notifications/resources/updated", "params": {"uri": uri}}
                     for uri in self.asked.get("resourceSubscriptions", ())]
        for obj in told:
            self.bridge.deliver_unless_closed(Message({"jsonrpc": "2.0", **obj}))
