"""The remote MCP server as a link, with recovery: ``Upstream``, the base of the SSE and
Streamable HTTP links (sse_remote.py, streamable_remote.py).

The remote may drop, expire our session or restart. Recovery keeps the desktop client's
stdio session alive: requests in flight get a JSON-RPC error at once, then we reconnect with
backoff and replay the client's own ``initialize`` (under an id of ours, whose answer we
keep to ourselves) and ``notifications/initialized``, then the log level and the resource
subscriptions the client set up (recovery.py, session_memory.py). Messages sent meanwhile
wait, bounded, for the link to be ready again. Subclasses provide the transport: ``_open``,
``_post``, ``_initialized_by``, ``_after_initialized``, ``_reset`` and ``_teardown``; they hand
what they read from the remote to ``deliver_remote`` (or ``deliver_refused``). A remote server of
server mode filters its tools here (``tool_filter``, as a child does on its pipes). It owns
no socket and never reads the wire itself.
"""

from __future__ import annotations

import logging
import time

import gevent
import requests
from gevent.event import Event

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import Task, closing, current_task, start
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.link import Link
from mcp_proxy.core.tool_filter import ToolFilter
from mcp_proxy.errors import (
    AuthError,
    FallbackNeeded,
    LinkClosed,
    MessageError,
    ProxyRefused,
    Refused,
    SessionLost,
    SignInRefused,
    TlsError,
    UpstreamError,
)
from mcp_proxy.upstream.backoff import backoff
from mcp_proxy.upstream.recovery import Recovery
from mcp_proxy.upstream.session_memory import REMEMBERED

logger = logging.getLogger(__name__)

AUTH_FAILED = {"reason": "authentication"}  # the data of an error that is no era evidence


class Upstream(Recovery, Link):
    """Base of the remote links: bookkeeping and error answers (the recovery loop: Recovery)."""

    concurrent_requests = False  # True: each request is posted in its own greenlet
    tool_filter: ToolFilter | None = None  # server mode's "tools" of a remote server entry

    def __init__(self, settings: ClientSettings, http: requests.Session, name: str) -> None:
        super().__init__(name)
        self.settings = settings
        self.http = http
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.ready = Event()
        self.initialize: Message | None = None
        self.initialized: Message | None = None
        self.in_flight: dict[tuple, object] = {}
        self.tasks: dict[tuple, tuple[Task, Message]] = {}  # id -> (poster, request)
        self.recovering = False  # lost, and reconnecting (or failed to)
        self._failures = 0

    # --- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Connect, retrying with backoff up to ``start_timeout``; what retrying cannot
        change (a refused credential, a bad certificate, a 4xx such as 400) fails at once."""
        deadline = time.monotonic() + self.settings.start_timeout
        attempt = 0
        while True:
            try:
                self._open()
                self.ready.set()
                return
            except (AuthError, TlsError, ProxyRefused):
                raise  # retrying will not help
            except Refused as exc:
                raise Refused(f"{exc}: retrying cannot help; check the URL (the server's "
                              f"Streamable HTTP or SSE endpoint) and the -H headers") from exc
            except UpstreamError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UpstreamError(f"cannot reach {self.settings.url}: {exc}") from exc
                logger.warning("%s: %s; retrying", self.name, exc)
                gevent.sleep(min(backoff(attempt), left))
                attempt += 1

    def _on_close(self, reason: str) -> None:
        self.ready.set()  # wake waiters: they will see the link closed
        try:
            self._teardown()
        except Exception:
            logger.debug("%s: teardown failed", self.name, exc_info=True)

    # --- client -> remote -----------------------------------------------------------------


    def send(self, message: Message, here: bool = False) -> None:
        """Send ``message``; a request is posted in a greenlet of its own, unless ``here``:
        the caller is one that request's cancellation kills (the era bridge's driver), and
        posts it itself."""
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        if self.tool_filter is not None:
            message = self.tool_filter.admit(message, self.deliver)
            if message is None:  # a hidden tool: answered as the server answers an unknown one
                return
        if message.method == "initialize":
            self.initialize = message
        elif message.method == "notifications/initialized":
            self.initialized = message
        elif message.method in REMEMBERED and self.memory is not None \
                and message.kind == jsonrpc.REQUEST:
            self.memory.sent(id_key(message.id), message.method, message.params)
        if message.kind == jsonrpc.REQUEST:
            self.in_flight[id_key(message.id)] = message.id
            if self.concurrent_requests and not here:
                task = start(self._send_now, message, name=f"{self.name}: request",
                             on_error=closing(self))
                self.tasks[id_key(message.id)] = (task, message)
                return
        self._send_now(message)

    def send_first(self, message: Message) -> None:
        """Post the client's first message now, letting FallbackNeeded through (auto)."""
        if message.method == "initialize":
            self.initialize = message
        if message.kind == jsonrpc.REQUEST:
            self.in_flight[id_key(message.id)] = message.id
        try:
            self._post(message)
        except FallbackNeeded:
            self.in_flight.clear()
            raise
        except UpstreamError as exc:
            self._fail(message, str(exc), AUTH_FAILED if isinstance(exc, AuthError) else None,
                       end=isinstance(exc, SignInRefused))

    def _send_now(self, message: Message) -> None:
        try:
            self._send_when_ready(message)
        finally:
            key, task = id_key(message.id), current_task()
            if task is not None and self.tasks.get(key, (None,))[0] is task:
                del self.tasks[key]

    def _send_when_ready(self, message: Message) -> None:
        """Post ``message`` once the link is ready; a failure answers it with an error."""
        if not self.ready.wait(self.settings.recovery_timeout) or self.closed.is_set():
            self._fail(message, f"remote unavailable: {self.close_reason or 'reconnecting'}")
            return
        if self._failures:
            gevent.sleep(backoff(self._failures - 1, cap=5.0))
        try:
            self._post(message)
            self._failures = 0
            if message is self.initialized:
                self._after_initialized()
        except AuthError as exc:
            self._fail(message, str(exc), AUTH_FAILED, end=isinstance(exc, SignInRefused))
        except SessionLost as exc:
            self._fail(message, str(exc))
            self.lost(str(exc))
        except UpstreamError as exc:
            self._failures += 1
            self._fail(message, str(exc))
        except Exception as exc:  # a bug must not leave the client waiting
            logger.exception("%s: sending %r failed", self.name, message)
            self._fail(message, f"proxy error: {exc.__class__.__name__}")

    def _fail(self, message: Message, text: str, data: dict | None = None,
              end: bool = False) -> None:
        """Answer a request we could not post with a JSON-RPC error (never a hang); ``end``:
        then close, the run ending with ``text`` as its last line (a sign-in that loops)."""
        if not end:
            logger.warning("%s: %s failed: %s", self.name, message.method or "message", text)
        if message.kind == jsonrpc.REQUEST and self.in_flight.pop(id_key(message.id), None) \
                is not None:
            if self.memory is not None:
                self.memory.forget(id_key(message.id))
            self._deliver_unless_closed(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR,
                                                              text, data))
        if end:
            self.close(text)

    # --- remote -> client -----------------------------------------------------------------

    def deliver_refused(self, data: bytes | str, exc: MessageError) -> None:
        """A remote message :func:`jsonrpc.parse` refused: logged, and an answer among them
        (one valid top-level id) becomes an error answer, so its request does not wait."""
        logger.warning("%s: skipped a message that is not JSON-RPC (%s): %.200r", self.name,
                       exc.message, data)
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        answer = jsonrpc.refused_answer(raw, exc.message)
        if answer is not None:
            self.deliver_remote(answer)

    def deliver_remote(self, message: Message) -> None:
        """Deliver what the remote sent, but keep the replayed initialize's answer here and drop
        an answer that comes after its request was already answered with an error."""
        if self.tool_filter is not None:
            message = self.tool_filter.answer(message)
        if message.kind == jsonrpc.RESPONSE:
            if self._own and self.keep_own(message):  # the recovery's own requests
                return
            if self.in_flight.pop(id_key(message.id), None) is None:
                logger.debug("%s: answer to %r arrived after its error; dropped",
                             self.name, message.id)
                return
            if self.memory is not None and self.memory.asked:
                self.memory.answered(id_key(message.id), "result" in message.obj)
        self._deliver_unless_closed(message)

    def _deliver_unless_closed(self, message: Message) -> None:
        # a closed link has nobody left to deliver to: what comes late is dropped
        try:
            self.deliver(message)
        except LinkClosed:
            pass

    # --- transport hooks (the others: recovery.py) ---------------------------------------------

    def _teardown(self) -> None:
        """Release the connection for good (e.g. DELETE the session)."""
