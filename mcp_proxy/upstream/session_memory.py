"""What the client set up on a remote session, so that a recovered session gets it again:
:class:`SessionMemory`, kept by each remote link (remote_link.py) and replayed by its
recovery (recovery.py).

A remote that restarts forgets its sessions: the new session logs at the server's default
level and sends ``notifications/resources/updated`` for nothing. The link remembers, from what
the client sent and the remote answered:

- the log level of the last ``logging/setLevel`` answered with success (an error answer
  leaves the level as it was; answers out of order: the one sent last wins);
- the URIs of ``resources/subscribe`` answered with success, less every URI the client has
  since sent ``resources/unsubscribe`` for (removed when sent, whatever the answer: the client
  wants no more of it). A subscribe answered with an error, or by the proxy's own error (the
  remote lost meanwhile), does not count. At most ``MAX_URIS`` (over it: one warning, and no
  new URI remembered).

After the replayed ``initialize`` and before the link is ready again, :meth:`replay` sends the
level and then the subscriptions under ids of ours, whose answers never reach the client; a
refusal is one warning line and the recovery goes on. It is the same idea as a shared
server's multiplexer (children/multiplexer.py), which replays from its own per-client
bookkeeping instead: a link it holds keeps no memory (children/shared_remote.py turns it off),
so nothing is sent twice. It costs a set lookup on the method of each message the client
sends, and nothing on an answer while none of those requests waits for one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent.pool

logger = logging.getLogger(__name__)

SET_LEVEL = "logging/setLevel"
SUBSCRIBE = "resources/subscribe"
UNSUBSCRIBE = "resources/unsubscribe"
REMEMBERED = frozenset({SET_LEVEL, SUBSCRIBE, UNSUBSCRIBE})
MAX_URIS = 10_000
MAX_ASKED = 1_000  # awaited answers kept (a cancelled request may never be answered)
WIDTH = 8  # subscriptions replayed at once, on a link that posts requests concurrently
MIN_WAIT = 1.0  # the level is asked for even when the deadline is near

# ask(method, params, id, timeout) -> the remote's answer (a jsonrpc.Message), or None when
# none came within ``timeout`` seconds
Ask = Callable[[str, dict, str, float], Any]


class SessionMemory:
    """The client's log level and subscriptions on one remote link (see the module
    docstring)."""

    def __init__(self, name: str, max_uris: int = MAX_URIS) -> None:
        self.name = name
        self.max_uris = max_uris
        self.level: str | None = None
        self.uris: dict[str, None] = {}  # an ordered set: replayed in the client's order
        self.asked: dict[tuple, tuple[str, str, int]] = {}  # id -> (method, value, order)
        self._sent = 0
        self._level_order = 0
        self._full = False

    # --- what the client sends and the remote answers --------------------------------------

    def sent(self, key: tuple, method: str, params: dict) -> None:
        """A request of :data:`REMEMBERED` on its way to the remote (``key``: its
        ``jsonrpc.id_key``; this module imports none of the package, to stay low in it)."""
        value = params.get("level" if method == SET_LEVEL else "uri")
        if not isinstance(value, str):
            return  # the remote refuses it: nothing to remember
        if method == UNSUBSCRIBE:
            self.uris.pop(value, None)
            for asked, (was, uri, _) in list(self.asked.items()):
                if was == SUBSCRIBE and uri == value:  # its success comes too late now
                    del self.asked[asked]
            return
        if len(self.asked) >= MAX_ASKED:
            del self.asked[next(iter(self.asked))]
        self._sent += 1
        self.asked[key] = (method, value, self._sent)

    def answered(self, key: tuple, success: bool) -> None:
        """The remote answered a request the client sent (one :meth:`sent` may know)."""
        asked = self.asked.pop(key, None)
        if asked is None or not success:
            return
        method, value, order = asked
        if method == SET_LEVEL:
            if order > self._level_order:
                self.level, self._level_order = value, order
        elif value in self.uris:
            pass
        elif len(self.uris) < self.max_uris:
            self.uris[value] = None
        elif not self._full:
            self._full = True
            logger.warning("%s: the client holds more than %d resource subscriptions; those "
                           "beyond are not sent again after a recovery", self.name,
                           self.max_uris)

    def forget(self, key: tuple) -> None:
        """The proxy answered this request with an error itself: the client saw it fail."""
        self.asked.pop(key, None)

    # --- a new remote session ---------------------------------------------------------------

    def replay(self, ask: Ask, width: int, until: float) -> None:
        """Send the level, then the subscriptions, to the new session (``width`` at once),
        until the monotonic time ``until`` (what is left then is one warning: the session
        is ready without it). A refusal or no answer is logged; an exception of ``ask`` (an
        :class:`~mcp_proxy.errors.UpstreamError`: the remote gone again) stops the replay
        and goes through to the recovery loop, raised here, in the caller's greenlet."""
        if self.level is not None:
            answer = ask(SET_LEVEL, {"level": self.level}, "mcp-proxy-replay-level",
                         max(until - time.monotonic(), MIN_WAIT))
            self._check(answer, f"logging/setLevel {self.level!r}")
        uris = list(self.uris)
        failed: list[Exception] = []
        skipped = 0

        def subscribe(numbered: tuple[int, str]) -> None:
            nonlocal skipped
            left = until - time.monotonic()
            if failed or left <= 0:
                skipped += not failed
                return
            try:
                answer = ask(SUBSCRIBE, {"uri": numbered[1]}, f"mcp-proxy-replay-{numbered[0]}",
                             left)
            except Exception as exc:  # kept for the caller: a pool's greenlet that raises
                failed.append(exc)  # would print its traceback past the logging
                return
            self._check(answer, f"resources/subscribe {numbered[1]!r}")

        pool = gevent.pool.Pool(max(width, 1))
        try:
            for numbered in enumerate(uris):
                pool.spawn(subscribe, numbered)  # waits while ``width`` are under way
            pool.join()
        finally:
            pool.kill()  # only if we were killed: every one of them has ended otherwise
        if failed:
            raise failed[0]
        if skipped:
            logger.warning("%s: the recovery's time ran out: %d resource subscription(s) not "
                           "sent again to the recovered remote session", self.name, skipped)

    def _check(self, answer: Any, what: str) -> None:
        if answer is None:
            logger.warning("%s: the recovered remote session did not answer %s", self.name,
                           what)
        elif "result" not in answer.obj:
            logger.warning("%s: the recovered remote session refused %s: %s", self.name, what,
                           answer.error or answer.obj.get("error"))
