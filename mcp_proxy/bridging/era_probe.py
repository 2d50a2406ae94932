"""EraProbe: a :class:`LegacyFace` that finds out, from the peer's answer to ``initialize``,
whether it has to bridge at all (SESSIONS.md §A.6 (2a), and §A.5 for a child).

``era`` is what is known of the peer: ``auto`` (not yet: the client's ``initialize`` goes to
the peer first, so a 2025-era or dual-era peer serves it as is, at no extra cost, and is
never probed), ``modern`` (bridge at once, without sending ``initialize``) or ``legacy``
(relay only). When the peer refuses ``initialize`` (``refused``) and then answers a
``server/discover`` probe, the session is bridged from then on; ``on_era`` hears what was
found. Messages that come while the era is being found out wait for it (bounded).
"""

from __future__ import annotations

from gevent.event import Event

from mcp_proxy.bridging.legacy_face import LegacyFace
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import MODERN_VERSION
from mcp_proxy.errors import LinkClosed


class EraProbe(LegacyFace):
    """Relays until the peer turns out to be 2026-07-28-only (see the module docstring)."""

    era_wait = 600.0  # how long a message waits for the era to be found out

    def __init__(self, name: str, era: str = "auto") -> None:
        super().__init__(name)
        self.era = era
        self.decided = Event()  # clear while the peer's era is being found out
        self.decided.set()
        self._pending_init: Message | None = None

    def refused(self, answer: Message) -> bool:
        """Whether the peer's answer to ``initialize`` is a refusal worth a probe."""
        return answer.error is not None

    def on_era(self, era: str) -> None:
        """The peer's era was found out: ``legacy`` or ``modern``."""

    def send(self, message: Message) -> None:
        if self.era == "legacy":  # found out: a relay, at the cost of this one check
            self.send_peer(message)
            return
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        if message.method != "initialize" or self.bridging:
            if not self.decided.wait(self.era_wait):
                raise LinkClosed(f"the {self.peer}'s protocol era is still unknown")
        if self.bridging:
            self.bridged(message)
        elif message.method == "initialize" and self.era == "modern":
            self.decided.clear()
            spawn(self._engage, message, None, name=f"{self.name}: discover",
                  on_error=closing(self))
        elif self.era == "modern":  # a session that never initializes (--stateless): its
            self.bridging, self.version = True, MODERN_VERSION  # requests carry no identity
            self.bridged(message)
        else:
            if message.method == "initialize" and self.era == "auto":
                self._pending_init = message
                self.decided.clear()
            self.send_peer(message)

    def decide(self, message: Message) -> bool:
        """Take what the peer sent if it is the bridge's, or the answer that decides the
        era (True); False: it is for the client."""
        if self.era == "legacy":  # found out: nothing is the bridge's
            return False
        if self.consumes(message):
            return True
        pending = self._pending_init
        if pending is None or message.kind != jsonrpc.RESPONSE or message.id != pending.id:
            return False
        self._pending_init = None
        if self.refused(message):
            spawn(self._engage, pending, message, name=f"{self.name}: discover",
                  on_error=closing(self))
            return True
        if message.error is None:
            self.era = "legacy"
            self.on_era("legacy")
        self.decided.set()
        return False

    def _engage(self, init: Message, refusal: Message | None) -> None:
        """Ask the peer ``server/discover``; if it answers, bridge and say so."""
        try:
            if self.discover(init, refusal):
                self.era = "modern"
                self.on_era("modern")
        finally:
            self.decided.set()

    def _on_close(self, reason: str) -> None:
        self.decided.set()
        super()._on_close(reason)
