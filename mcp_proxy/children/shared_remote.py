"""SharedRemote: one remote session shared by every client session of a remote server.

A ``"url"`` entry with ``"shared": true`` (or under ``--shared-child`` or ``--stateless``) is
served as a shared local server is: a :class:`~mcp_proxy.children.multiplexer.Multiplexer`
hands each session a port, and its "child" is one remote session (``RemoteServer.link``)
instead of a process. Everything the multiplexer does holds as it is: the remote is
initialized once by the proxy and each client's ``initialize`` answered from that result,
ids and progress tokens rewritten and restored, subscriptions counted, the most verbose log
level sent, and a server request routed to the one client with requests in flight that
declared what it needs (else refused: never a guess).

What differs is how the "child" fails. A remote session recovers by itself
(upstream/remote_link.py): it answers what is in flight with errors, reconnects and replays
the proxy's ``initialize``, while the link stays open. This subclass hears of it
(``on_state``, upstream/watched_remote.py): while the remote is lost the ports are told, as
when a child dies (a combined server's member hides its tools), and the server requests the
clients hold are forgotten; once it is back, the log level and the subscriptions the new
remote session has lost are sent again, from the multiplexer's own bookkeeping, and the
ports are told (so the link keeps no memory of its own of them: upstream/session_memory.py,
which would send them twice). When the recovery gives up the link closes, and the multiplexer
starts a new one as it restarts a child.
"""

from __future__ import annotations

import logging
from functools import partial

from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.core.link import Link

logger = logging.getLogger(__name__)


class SharedRemote(Multiplexer):
    """A multiplexer whose child is a remote session (see the module docstring)."""

    def _handshake(self, child: Link) -> None:
        child.on_state = partial(self._remote_state, child)  # type: ignore[attr-defined]
        if getattr(child, "memory", None) is not None:  # replayed here, from self.level and
            child.memory = None  # type: ignore[attr-defined]  # self.sharing.subscribed
        super()._handshake(child)

    def _remote_state(self, child: Link, up: bool, why: str) -> None:
        if child is not self.child or self.state != "running":
            return
        if not up:
            self.failure = why
            logger.warning("%s: the shared remote session is lost (%s); reconnecting",
                           self.name, why)
            for port in self.sharing.ports:
                port.server_requests.clear()
            self._tell_ports(False, why)
            return
        logger.info("%s: the shared remote session is back", self.name)
        if self.level:
            self.background("logging/setLevel", {"level": self.level})
        for uri in self.sharing.subscribed:
            self.background("resources/subscribe", {"uri": uri})
        self._tell_ports(True, "")
