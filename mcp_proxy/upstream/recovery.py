"""The recovery of a remote link: :class:`Recovery`, mixed into ``Upstream`` (remote_link.py),
which provides the transport hooks and the bookkeeping it uses (it imports no link, to keep
the remote links as low in the layout as they were).

When the remote session is lost (a dropped stream, a 404 on our session id, a restart on the
same port), ``lost`` answers every request in flight with an error at once, and a greenlet
reconnects with backoff (up to ``--recovery-timeout``), replays the client's own
``initialize`` under an id of ours (its answer kept here) and ``notifications/initialized``,
then the client's log level and resource subscriptions (session_memory.py), and only then
sets the link ready again: nothing the client sends meanwhile overtakes them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.errors import AuthError, ProxyRefused, TlsError, UpstreamError
from mcp_proxy.upstream.backoff import backoff
from mcp_proxy.upstream.session_memory import WIDTH, SessionMemory

logger = logging.getLogger(__name__)

REPLAY_ID = "mcp-proxy-reinitialize"


class Recovery:
    """The loss of the remote session and its recovery (see the module docstring)."""

    concurrent_requests: bool
    settings: ClientSettings
    ready: Event
    initialize: Message | None
    initialized: Message | None
    in_flight: dict[tuple, Any]
    recovering: bool
    _failures: int
    name: str
    closed: Any
    close: Any

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._own: dict[str, AsyncResult] = {}  # our own requests' ids -> their answers
        self._lost_again: str | None = None  # why the session being recovered went too
        # the client's log level and subscriptions, sent again to a new session (None: not
        # kept, e.g. a shared remote's multiplexer replays them from its own bookkeeping)
        self.memory: SessionMemory | None = SessionMemory(name)

    def keep_own(self, message: Message) -> bool:
        """An answer to a request of ours: kept here (True), never delivered."""
        waiter = self._own.get(message.id) if isinstance(message.id, str) else None
        if waiter is None:
            return False
        waiter.set(message)
        return True

    def lost(self, reason: str) -> None:
        """The remote session is gone: fail what is in flight, then reconnect in the background.
        Lost again while recovering (the new session's stream dropped during the replay):
        the recovery does not count that attempt and tries again."""
        if self.closed.is_set():
            return
        if self.recovering:
            self._lost_again = reason
            return
        logger.warning("%s: lost the remote session (%s); reconnecting", self.name, reason)
        self.recovering = True
        self.ready.clear()
        if self.memory is not None:
            self.memory.asked.clear()  # each is answered with an error below: none counts
        for request_id in list(self.in_flight.values()):
            self.in_flight.pop(id_key(request_id), None)
            self._deliver_unless_closed(jsonrpc.error_message(
                request_id, jsonrpc.INTERNAL_ERROR, f"remote connection lost: {reason}"))
        spawn(self._recover, name=f"{self.name}: recovery", on_error=closing(self))

    def _recover(self) -> None:
        deadline = time.monotonic() + self.settings.recovery_timeout
        attempt = 0
        while not self.closed.is_set():
            try:
                self._reset()
                self._lost_again = None  # from now on, a loss is the new session's
                self._open()
                self._replay_handshake(deadline)
                if self._lost_again is not None:
                    raise UpstreamError(f"lost again while recovering: {self._lost_again}")
                logger.info("%s: reconnected and re-initialized", self.name)
                self.recovering = False
                self._failures = 0
                self.ready.set()
                return
            except (AuthError, TlsError, ProxyRefused) as exc:
                self.close(f"cannot reconnect: {exc}")
                return
            except UpstreamError as exc:  # Refused too: the remote worked until now, and a
                # deploy may show a page that is not MCP for a while (--recovery-timeout)
                if time.monotonic() > deadline:
                    self.close(f"could not reconnect within {self.settings.recovery_timeout:g}"
                               f" s: {exc}")
                    return
                logger.warning("%s: reconnect failed (%s)", self.name, exc)
                gevent.sleep(backoff(attempt))
                attempt += 1

    def _replay_handshake(self, deadline: float) -> None:
        if self.initialize is None:
            return
        answer = self._ask_own(dict(self.initialize.obj, id=REPLAY_ID))
        if answer is None:
            raise UpstreamError("no answer to the replayed initialize")
        if "error" in answer.obj:
            raise UpstreamError(f"replayed initialize failed: {answer.obj['error']}")
        self._initialized_by(answer)
        if self.initialized is not None:
            self._post(self.initialized)
            self._after_initialized()
        if self.memory is not None:
            self.memory.replay(self._ask, WIDTH if self.concurrent_requests else 1, deadline)

    def _ask(self, method: str, params: dict, request_id: str, timeout: float) -> Message | None:
        return self._ask_own({"jsonrpc": "2.0", "id": request_id, "method": method,
                              "params": params}, timeout)

    def _ask_own(self, obj: dict, timeout: float | None = None) -> Message | None:
        """Post a request of ours; its answer (None: none in time, at most ``timeout`` s),
        which the client never sees. An UpstreamError of the POST goes through."""
        waiter = self._own[obj["id"]] = AsyncResult()
        wait = self.settings.connect_timeout + 20
        try:
            self._post(Message(obj))
            return waiter.get(timeout=wait if timeout is None else min(wait, timeout))
        except gevent.Timeout:
            return None
        finally:
            self._own.pop(obj["id"], None)

    # --- what the link provides (remote_link.py and its transports) -----------------------------

    def _deliver_unless_closed(self, message: Message) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        """Connect (or check the remote is reachable); raise UpstreamError or AuthError."""

    def _post(self, message: Message) -> None:
        """POST one message to the remote; what it answers comes back through
        ``deliver_remote``."""
        raise NotImplementedError

    def _initialized_by(self, answer: Message) -> None:
        """Learn what the initialize answer tells (session, version)."""

    def _after_initialized(self) -> None:
        """The handshake is complete (e.g. open the GET stream)."""

    def _reset(self) -> None:
        """Forget the old connection before reconnecting."""
