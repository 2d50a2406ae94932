"""LegacyRemoteAsModern: a 2026-07-28 desktop client in front of a remote that speaks only
the 2025 era (issue 25), the mirror of ``fallforward.py``.

It is server mode's modern->legacy bridge facing the other way, and shares all of it: the
session with the remote is a ``children/legacy_adapter.py:LegacySession`` (handed in by
``cli.py``, which keeps this module's import chain short) whose "child" is the remote link
(``upstream/remote_link.py:Upstream``, SSE or Streamable HTTP) and whose ports are the
desktop client's requests on our stdio, one :class:`StdioRequestPort` each. So, as there:

- the remote session is initialized by the proxy from the first request's ``_meta``
  (its clientInfo and clientCapabilities); ``server/discover`` is answered from the
  remote's ``initialize`` result;
- each request goes on with the envelope stripped, its ``logLevel`` applied as
  ``logging/setLevel``, its progress token kept; answers get ``resultType`` (and a
  listing's ``ttlMs``/``cacheScope``);
- the remote's sampling, elicitation and roots requests become ``input_required`` rounds
  with a signed ``requestState`` (when exactly one request is in flight, as on a shared
  child), and the client's retry resumes the same legacy request;
- ``subscriptions/listen`` is served by the bridge, from the remote's change notifications.

What is stdio's own is here: the 2026-07-28 draft cancels over stdio with
``notifications/cancelled`` (there is no stream to close), so a cancel closes that
request's port, and the session sends the remote ``notifications/cancelled`` with the id it
used; a cancelled listen ends. A request id already in flight, and a ``_meta`` that is not
what the era says, are refused with -32600/-32602. :func:`open_modern` picks the bridge:
see its docstring.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from gevent.event import AsyncResult

from mcp_proxy.children.legacy_bridge import carried_capabilities
from mcp_proxy.children.port import LEVELS, Port
from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import era_headers, greenlets, jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.core.link import Link
from mcp_proxy.core.protocol import (
    CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    ENVELOPE,
    LOG_LEVEL_KEY,
    MODERN_VERSION,
    VERSION_KEY,
)
from mcp_proxy.errors import LinkClosed, SpawnError
from mcp_proxy.upstream.remote_link import Upstream
from mcp_proxy.upstream.streamable_remote import StreamableUpstream

logger = logging.getLogger(__name__)

INVALID_PARAMS = -32602
PROBE_ID = "mcp-proxy-discover"  # the proxy's own server/discover, once per run
BRIDGED = "bridge modern->legacy: a 2026-07-28 desktop client in front of a 2025-era remote (%s)"
# the _meta keys whose values the era types: (key, type, what it must be)
_TYPED = ((VERSION_KEY, str, "a string"), (CAPABILITIES_KEY, dict, "an object"),
          (CLIENT_INFO_KEY, dict, "an object"))


def is_modern(message: Message) -> bool:
    """Whether the desktop client's first message is a 2026-07-28 request."""
    return message.kind == jsonrpc.REQUEST and era_headers.is_modern_version(
        era_headers.version_of(message))


def meta_problem(message: Message) -> str | None:
    """What is wrong with a request's ``_meta`` for this era (None: nothing)."""
    if "_meta" not in message.params:
        return None
    meta = message.params["_meta"]
    if not isinstance(meta, dict):
        return "_meta must be an object"
    for key, kind, what in _TYPED:
        if key in meta and not isinstance(meta[key], kind):
            return f"_meta[{key!r}] must be {what}"
    if LOG_LEVEL_KEY in meta and meta[LOG_LEVEL_KEY] not in LEVELS:
        return f"_meta[{LOG_LEVEL_KEY!r}] must be one of {', '.join(LEVELS)}"
    return None  # a progressToken's type is checked as stdin is read (core/jsonrpc.py)


class StdioRequestPort(Port):
    """One desktop-client request's end of the bridged session; it ends with its answer
    (a listen, when the client cancels it)."""

    def __init__(self, front: LegacyRemoteAsModern, session: Any, name: str,
                 request_id: Any) -> None:
        super().__init__(session, name)
        self.front = front
        self.key = id_key(request_id)

    def deliver(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        self.front.deliver_unless_closed(message)
        if message.kind == jsonrpc.RESPONSE and id_key(message.id) == self.key:
            self.close("answered")

    def _on_close(self, reason: str) -> None:
        if self.front.requests.get(self.key) is self:
            del self.front.requests[self.key]
        super()._on_close(reason)  # the session cancels on the remote what is in flight


class LegacyRemoteAsModern(Link):
    """The 2025-era remote as a 2026-07-28 desktop client sees it (module docstring)."""

    def __init__(self, upstream: Upstream, session: Callable[..., Any]) -> None:
        """``session``: the class of the bridged session (``LegacySession``)."""
        super().__init__("remote (bridged)")
        self.upstream = upstream
        self._session_class = session
        self.session: Any = None
        self.requests: dict[tuple, StdioRequestPort] = {}
        self._numbers = itertools.count(1)
        greenlets.spawn(self._watch, name="bridged remote watch")

    def _watch(self) -> None:
        self.upstream.ended.wait()
        self.close(self.upstream.close_reason or "the remote link ended")

    def _spawn(self) -> Upstream:
        if self.upstream.closed.is_set():
            raise SpawnError(f"the remote link ended: {self.upstream.close_reason}")
        return self.upstream

    def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        if message.kind == jsonrpc.REQUEST:
            self._request(message)
        elif message.method == "notifications/cancelled":
            port = self.requests.get(id_key(message.params.get("requestId")))
            if port is not None:  # only a request in flight: a late cancel is a no-op
                port.close("cancelled by the client")
        else:  # the era has no other client notifications, and no server requests to answer
            logger.debug("%s: dropped %r: nothing to carry it to", self.name, message)

    def _request(self, message: Message) -> None:
        key = id_key(message.id)
        problem = meta_problem(message)
        if key in self.requests:
            self._refuse(message, jsonrpc.INVALID_REQUEST, f"Invalid Request: id "
                         f"{message.id!r} is already used by a request in flight")
            return
        if problem is not None:
            self._refuse(message, INVALID_PARAMS, f"Invalid params: {problem}")
            return
        self._open_session(message)
        port = StdioRequestPort(self, self.session, f"stdio:{next(self._numbers)}",
                                message.id)
        self.session.admit(port)
        self.requests[key] = port
        if self.session.started_for(port, message):  # as server mode's edge: a listen's
            self.session.route(port, message)  # grant needs the remote's capabilities

    def _open_session(self, message: Message) -> None:
        if self.session is None:  # initialized from the first request's _meta
            meta = message.params.get("_meta") or {}
            self.session = self._session_class(
                "remote", self._spawn, carried_capabilities(meta.get(CAPABILITIES_KEY), False),
                meta.get(CLIENT_INFO_KEY))

    def start(self, first: Message) -> None:
        """Initialize the remote session now, for ``first``; SpawnError if it cannot be."""
        self._open_session(first)
        self.session.ensure_started()

    def _refuse(self, message: Message, code: int, text: str) -> None:
        logger.warning("%s: refused %s %r: %s", self.name, message.method, message.id, text)
        self.deliver_unless_closed(jsonrpc.error_message(message.id, code, text))

    def deliver_unless_closed(self, message: Message) -> None:
        try:
            self.deliver(message)
        except LinkClosed:
            pass  # nobody is left to tell

    def _on_close(self, reason: str) -> None:
        if self.session is not None:
            self.session.close(reason)  # its ports, and the remote link
        self.upstream.close(reason)


def speaks_modern(upstream: StreamableUpstream, first: Message) -> bool:
    """Ask the remote ``server/discover`` (with the envelope of the client's first request)
    before anything else is sent: whether it answers as a 2026-07-28 server does."""
    meta = first.params["_meta"]
    envelope = {key: meta[key] for key in ENVELOPE if key in meta}
    answer: AsyncResult = AsyncResult()
    upstream.attach(lambda message: message.id == PROBE_ID and answer.set(message),
                    lambda: answer.set(None))  # the bridge takes the link over later
    upstream.send(Message({"jsonrpc": "2.0", "id": PROBE_ID, "method": "server/discover",
                           "params": {"_meta": {VERSION_KEY: MODERN_VERSION, **envelope}}}))
    got = answer.wait(upstream.settings.read_timeout + 5)  # the POST bounds it; None: not
    result = got.obj.get("result") if got is not None else None
    return isinstance(result, dict) and isinstance(result.get("supportedVersions"), list)


def open_modern(settings: ClientSettings, upstream: Upstream, first: Message,
                session: Callable[..., Any], sse: Callable[[], Upstream]) -> Link:
    """The link for a 2026-07-28 desktop client (its first message is ``first``).

    A 2026-07-28 remote gets its requests relayed as they are (the link is ``upstream``);
    a 2025-era one, through the bridge. What the remote speaks is learnt once: an SSE
    remote speaks the 2025 era; over Streamable HTTP ``--protocol-era modern`` says so, or
    with ``auto`` a ``server/discover`` of the proxy's own asks (``legacy`` never bridges:
    run.py relays as is, and a dual-era client falls back by itself). With
    ``--transport auto`` the bridge's ``initialize`` goes first over Streamable HTTP; when
    it fails, the remote is taken for an SSE one (``sse()`` connects it), as for a 2025-era
    client. One line says which.
    UpstreamError: that SSE endpoint cannot be reached.
    """
    era = settings.protocol_era
    over = "SSE"
    if isinstance(upstream, StreamableUpstream):
        over = "Streamable HTTP"
        if era == "modern" or (era == "auto" and speaks_modern(upstream, first)):
            upstream.allow_fallback = False
            logger.info("a 2026-07-28 desktop client and a 2026-07-28 remote: relayed")
            return upstream
        upstream.modern_version = None  # the probe's: the session's notifications are 2025's
        if upstream.allow_fallback:  # the 2025 era's rule: initialize refused, try SSE
            front = LegacyRemoteAsModern(upstream, session)
            try:
                front.start(first)
                upstream.allow_fallback = False
                logger.info(BRIDGED, over)
                return front
            except SpawnError as exc:
                logger.info("remote refused initialize over Streamable HTTP (%s); using SSE",
                            exc)
                front.close("falling back to SSE")
                upstream, over = sse(), "SSE"
        upstream.allow_fallback = False
    logger.info(BRIDGED, over)
    return LegacyRemoteAsModern(upstream, session)
