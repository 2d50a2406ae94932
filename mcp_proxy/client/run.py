"""Client mode: our stdio, bridged to a remote SSE or Streamable HTTP server.

Start-up connects first (retrying an unreachable remote for a bounded time; a refused
credential fails at once, and answers the client's first request with the reason), then
relays until stdin closes (exit 0, after the remote session is closed) or the remote is lost
for good (exit 1). Nothing but protocol goes to stdout. It owns start-up, the choice of
transport (``--transport auto``), which secrets the log blanks (``core.redact.Redact``),
``--oauth-logout``, turning traces on (core/trace_setup.py: the remote link is then the traced
one, upstream/traced_remote.py) and the exit status; the relaying is ``core.link.bridge``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import gevent

from mcp_proxy.client.fallforward import FallForward
from mcp_proxy.client.legacy_remote import is_modern, open_modern
from mcp_proxy.client.stdio import StdioDownstream
from mcp_proxy.config.flag_settings import client_settings
from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import jsonrpc, trace_setup
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link, bridge
from mcp_proxy.core.redact import Redact
from mcp_proxy.errors import AuthError, FallbackNeeded, LinkClosed, Refused, TlsError, UpstreamError
from mcp_proxy.upstream.http_session import make_session, secrets_of
from mcp_proxy.upstream.oauth.store import logout
from mcp_proxy.upstream.remote_link import Upstream
from mcp_proxy.upstream.streamable_remote import StreamableUpstream
from mcp_proxy.upstream.traced_remote import remote_class

logger = logging.getLogger(__name__)

SERVICE_NAME = "mcp-proxy-client"  # the traces' service.name, unless OTEL_SERVICE_NAME says


def connect(settings: ClientSettings, http, transport: str) -> Upstream:
    kind = remote_class(transport)  # with traces on, the link that makes spans
    if transport == "sse":
        upstream: Upstream = kind(settings, http)
    else:
        upstream = kind(settings, http, allow_fallback=transport == "auto")
    upstream.start()
    return upstream


def era_link(settings: ClientSettings, upstream: Upstream) -> Link:
    """The link the client talks to: over Streamable HTTP, one that can bridge a 2025-era
    client to a remote of the 2026-07-28 era (unless ``--protocol-era legacy``)."""
    if isinstance(upstream, StreamableUpstream) and settings.protocol_era != "legacy":
        return FallForward(upstream, settings.protocol_era)
    return upstream


def failure(exc: UpstreamError, what: str = "") -> str:
    """The one line that says why start-up failed for good, and what to change."""
    if isinstance(exc, AuthError):
        return f"authentication failed: {exc}"
    if isinstance(exc, TlsError):
        return f"{exc} (give --verify-ssl CA_BUNDLE, or --no-verify-ssl)"
    return f"{what}{exc}"


def refuse(down: StdioDownstream, text: str, first: Message | None = None,
           wait: float = 2.0) -> None:
    """Start-up failed for good: log why, and tell the client in answer to ``first`` or
    to its first request (it usually sends ``initialize`` at once), not only by going away."""
    logger.error("%s", text)
    with gevent.Timeout(wait, False), contextlib.suppress(LinkClosed):
        for message in [first] if first is not None else down:
            if message.kind == jsonrpc.REQUEST:
                down.send(jsonrpc.error_message(message.id, jsonrpc.INTERNAL_ERROR, text))
                return


def choose_transport(settings: ClientSettings, http, down: StdioDownstream,
                     upstream: StreamableUpstream, link: Link) -> Link | None:
    """``--transport auto``: carry the client's first messages over Streamable HTTP, and
    switch to SSE when the remote refuses ``initialize`` with 400, 404 or 405 (the spec's
    rule, as mcp-remote does). A dual-era client opens with ``server/discover``: refused that
    way, it tells nothing yet (an SSE endpoint and a 2025-era Streamable one may both say
    405), so its error goes back and the choice waits for the ``initialize`` that follows.
    None: stdin closed first. UpstreamError: neither transport works (the client was told
    why, in answer to its message)."""
    link.attach(lambda message: down.send(message), lambda: None)  # until the bridge
    for message in down:
        upstream.refused = None
        try:
            link.send_first(message)
        except FallbackNeeded as exc:
            logger.info("remote does not speak Streamable HTTP (%s); using SSE", exc)
            link.close("falling back to SSE")
            try:
                sse = connect(settings, http, "sse")
            except UpstreamError as err:
                refuse(down, failure(err, f"{settings.url} speaks neither Streamable HTTP "
                                          f"({exc}) nor SSE: "), message)
                raise
            sse.send(message)
            return sse
        if upstream.refused is None or message.method == "initialize":
            upstream.allow_fallback = False
            return link
    link.close("stdin closed")
    return None


def run_client(ns: argparse.Namespace, legacy_session: Callable[..., Any] | None = None) -> int:
    """Client mode's run; ``legacy_session``: the class of server mode's modern->legacy
    bridge session (cli.py hands in ``LegacySession``), for a 2026-07-28 desktop client in
    front of a 2025-era remote (legacy_remote.py)."""
    settings = client_settings(ns)
    if ns.oauth_logout:
        count = logout(settings.url)
        logger.info("forgot %s for %s", f"{count} cached sign-in(s)" if count
                    else "nothing (no cached sign-in)", settings.url)
        return 0
    # stdout (fd 1) is the protocol's: a print, or OTEL_TRACES_EXPORTER=console, goes to stderr
    sys.stdout = sys.stderr
    trace_setup.configure(SERVICE_NAME)  # from the OTEL_* variables; off unless they ask
    redact = Redact(secrets_of(settings))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    http = make_session(settings)
    try:
        upstream = connect(settings, http, settings.transport)
    except UpstreamError as exc:
        hint = "; if it is a Streamable HTTP endpoint, leave out --transport sse" if \
            isinstance(exc, Refused) and settings.transport == "sse" else ""
        refuse(StdioDownstream(max_frame=settings.max_frame), failure(exc) + hint)
        return 1
    down = StdioDownstream(max_frame=settings.max_frame, tools=settings.tools)
    first = down.peek()  # left for the bridge: the client's era picks the link
    if first is not None and is_modern(first) and legacy_session is not None \
            and settings.protocol_era != "legacy":  # legacy: never probe, never bridge
        try:
            link: Link | None = open_modern(settings, upstream, first, legacy_session,
                                            lambda: connect(settings, http, "sse"))
        except UpstreamError as exc:
            refuse(down, failure(exc, f"{settings.url}: "), first)
            return 1
    else:
        link = era_link(settings, upstream)
        if settings.transport == "auto":
            try:
                link = choose_transport(settings, http, down, upstream, link)
            except UpstreamError:
                return 1
            if link is None:
                return 0
    bridge(down, link)
    down.ended.wait()
    link.ended.wait()
    if down.close_reason == "stdin closed":
        return 0
    logger.error("stopped: %s", link.close_reason or down.close_reason)
    return 1
