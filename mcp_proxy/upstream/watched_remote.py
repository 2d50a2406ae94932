"""What makes server mode's remote links tell whoever holds them when the remote session is
lost and when it is back: the :class:`StateHook` mixin (remote_server.py mixes it into its
two links; it imports nothing, so the links stay as low in the layout as they were).

A remote link recovers by itself (remote_link.py): it answers what is in flight, reconnects
and replays the ``initialize`` it was given, while the link stays open. Most holders need no
more (a client session's remote session just waits). A combined server's member must hide
its tools meanwhile and show them again after (``children/combined_members.py``), as it does
for a shared child's port: ``on_state(up, why)`` is called with False once the session is
lost and with True once it is back. When recovery gives up the link closes, as before.
The hook costs nothing per message: it runs only on a loss and a recovery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class StateHook:
    """Mixed in before a remote link class (see the module docstring)."""

    on_state: Callable[[bool, str], None] | None = None
    recovering: bool
    closed: Any

    def lost(self, reason: str) -> None:
        already = self.recovering or self.closed.is_set()
        super().lost(reason)  # type: ignore[misc]
        if not already and self.recovering and self.on_state is not None:
            self.on_state(False, f"remote connection lost: {reason}")

    def _recover(self) -> None:
        super()._recover()  # type: ignore[misc]
        if not self.recovering and not self.closed.is_set() and self.on_state is not None:
            self.on_state(True, "")
