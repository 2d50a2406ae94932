"""FallForward: a 2025-era desktop client in front of a remote that speaks only 2026-07-28.

A link that wraps the Streamable HTTP upstream (SESSIONS.md §A.6 (2a)). Until the remote
turns out to be modern-only it relays as is, so a 2025-era or dual-era remote costs nothing
extra: the client's ``initialize`` goes first. When that fails and a ``server/discover``
probe succeeds (or at once with ``--protocol-era modern``), it bridges, as the era bridge
both modes share does (bridging/legacy_face.py): ``initialize`` answered from the
DiscoverResult, every request stamped with the ``_meta`` envelope and carried through its
``input_required`` rounds, change notifications from one held ``subscriptions/listen``.
What is the remote's own is here: the first message's fall back to HTTP+SSE, the era
decided on the remote's answer to ``initialize`` (not on a refused sign-in), and a stopped
leg's POST response closed.

Modern and dual-era desktop clients never need it: their requests pass straight through.
"""

from __future__ import annotations

import logging

from mcp_proxy.bridging.era_probe import EraProbe
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import FallbackNeeded
from mcp_proxy.upstream.remote_link import AUTH_FAILED
from mcp_proxy.upstream.streamable_remote import StreamableUpstream

logger = logging.getLogger(__name__)


class FallForward(EraProbe):
    """The remote as the desktop client sees it (see the module docstring)."""

    def __init__(self, inner: StreamableUpstream, era: str = "auto") -> None:
        super().__init__("remote", era)
        self.inner = inner
        self.settings = inner.settings
        self.ask_timeout = self.era_wait = inner.settings.read_timeout
        inner.attach(self._deliver_remote, lambda: self.close(inner.close_reason))

    def send_peer(self, message: Message, here: bool = False) -> None:
        self.inner.send(message, here)

    def stop_peer(self, leg_id: str) -> None:
        self.inner.stop_request(leg_id)  # close its response: a cancel, in this era

    def refused(self, answer: Message) -> bool:
        # a refused sign-in is not an era: the client gets it as it came
        return answer.error is not None and answer.error.get("data") != AUTH_FAILED

    def send_first(self, message: Message) -> None:
        """The client's first message, letting FallbackNeeded (no Streamable HTTP) through."""
        if message.method == "initialize" and self.era == "modern":
            self.send(message)
            return
        if message.method == "initialize":
            self._pending_init = message
            self.decided.clear()
        try:
            self.inner.send_first(message)
        except FallbackNeeded:
            self._pending_init = None
            self.decided.set()
            raise

    def _deliver_remote(self, message: Message) -> None:
        """What the upstream delivered: the bridge's own, or for the client."""
        if not self.decide(message):
            self.deliver_unless_closed(message)

    def _on_close(self, reason: str) -> None:
        super()._on_close(reason)
        self.inner.close(reason)
