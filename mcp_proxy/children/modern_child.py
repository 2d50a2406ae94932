"""ModernChildAsLegacy: a 2025-era session in front of a server process that speaks only
2026-07-28 (SESSIONS.md §A.5).

The session's upstream, wrapped: its own child (per-session mode) or a port of the server's
2026-07-28 lane (a shared child, where the lane rewrites ids, tokens and listens and seals
``requestState``), or a remote server's session (a ``"url"`` entry whose remote refused the
start-up probe's ``initialize``). It is client mode's fall-forward bridge facing a child
instead of a remote: the same :class:`LegacyFace` (bridging/legacy_face.py) answers
``initialize`` from ``server/discover``, stamps each request with the session's ``_meta``, puts
``input_required`` rounds to the client as real sampling, elicitation and roots requests, and
holds one ``subscriptions/listen``. A stopped leg is a ``notifications/cancelled`` (which a
remote link turns into closing the leg's response).

The child's era is learned once per server (the supervisor keeps it): while it is unknown,
the client's ``initialize`` goes to the child as is; when the child refuses it and then
answers ``server/discover`` (a probe sent only after the refusal: a dual-era child is never
probed), the session is bridged and ``learned("modern")`` tells the supervisor, which bridges
later sessions from their first message. A child that accepts ``initialize`` is 2025-era:
``learned("legacy")``, and later sessions get the child itself (no bridge, no cost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mcp_proxy.bridging.era_probe import EraProbe
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link
from mcp_proxy.errors import LinkClosed

logger = logging.getLogger(__name__)

DISCOVER_TIMEOUT = 60.0  # a fresh child answers its first request after it started


class ModernChildAsLegacy(EraProbe):
    """A child (or a lane port) as a 2025-era client sees it (see the module docstring)."""

    peer = "server"
    discover_timeout = DISCOVER_TIMEOUT
    era_wait = DISCOVER_TIMEOUT * 2

    def __init__(self, inner: Link, era: str, learned: Callable[[str], None],
                 ask_timeout: float) -> None:
        """``era``: "modern" (bridge at once) or "auto" (relay until the child refuses
        ``initialize``); ``learned`` is told the era once this session finds it out."""
        super().__init__(inner.name, era)
        self.inner, self.learned = inner, learned
        self.ask_timeout = ask_timeout
        self.meter = getattr(inner, "meter", None)  # the session's audit counts through it
        inner.attach(self._deliver_child, lambda: self.close(inner.close_reason))

    @property
    def peer_ready(self):
        return self.inner.peer_ready

    @peer_ready.setter
    def peer_ready(self, event) -> None:
        inner = self.__dict__.get("inner")  # Link.__init__ sets it before there is one
        if inner is not None:  # the child reads its stdout only while the session can take
            inner.peer_ready = event

    def send_peer(self, message: Message, here: bool = False) -> None:
        self.inner.send(message)  # a write to the child's stdin: never waits for the answer

    def stop_peer(self, leg_id: str) -> None:
        try:
            self.inner.send(Message({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                     "params": {"requestId": leg_id}}))
        except LinkClosed:
            pass

    def on_era(self, era: str) -> None:
        self.learned(era)

    def _deliver_child(self, message: Message) -> None:
        """What the child sent: the bridge's own (or the answer that decides the era); a
        2026-07-28 child's request is refused; the rest goes to the session."""
        if self.decide(message):
            return
        if self.bridging and message.kind == jsonrpc.REQUEST:
            logger.info("%s: refused the server's %s: a 2026-07-28 server asks through "
                        "input_required", self.name, message.method)
            self.send_peer(jsonrpc.error_message(
                message.id, jsonrpc.INTERNAL_ERROR,
                "a 2026-07-28 server must not send requests (use input_required)"))
            return
        self.deliver_unless_closed(message)

    def _on_close(self, reason: str) -> None:
        super()._on_close(reason)
        self.inner.close(reason)
