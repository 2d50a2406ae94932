"""Client mode: our stdio, bridged to a remote SSE or Streamable HTTP server.

Start-up connects first (retrying an unreachable remote for a bounded time; a refused
credential fails at once), then relays until stdin closes (exit 0, after the remote session
is closed) or the remote is lost for good (exit 1). Nothing but protocol goes to stdout.
"""

from __future__ import annotations

import argparse
import logging

from mcp_proxy.errors import AuthError, FallbackNeeded, TlsError, UpstreamError
from mcp_proxy.link import bridge
from mcp_proxy.options import client_settings
from mcp_proxy.settings import ClientSettings
from mcp_proxy.stdio import StdioDownstream
from mcp_proxy.upstream.base import Upstream
from mcp_proxy.upstream.http import make_session
from mcp_proxy.upstream.sse import SseUpstream
from mcp_proxy.upstream.streamable import StreamableUpstream

logger = logging.getLogger(__name__)


def connect(settings: ClientSettings, http, transport: str) -> Upstream:
    if transport == "sse":
        upstream: Upstream = SseUpstream(settings, http)
    else:
        upstream = StreamableUpstream(settings, http, allow_fallback=transport == "auto")
    upstream.start()
    return upstream


def run_client(ns: argparse.Namespace) -> int:
    settings = client_settings(ns)
    http = make_session(settings)
    try:
        upstream = connect(settings, http, settings.transport)
    except AuthError as exc:
        logger.error("authentication failed: %s", exc)
        return 1
    except TlsError as exc:
        logger.error("%s (give --verify-ssl CA_BUNDLE, or --no-verify-ssl)", exc)
        return 1
    except UpstreamError as exc:
        logger.error("%s", exc)
        return 1
    down = StdioDownstream(max_frame=settings.max_frame)
    if settings.transport == "auto":
        first = next(iter(down), None)
        if first is None:
            upstream.close("stdin closed")
            return 0
        try:
            upstream.send_first(first)
        except FallbackNeeded as exc:
            logger.info("remote does not speak Streamable HTTP (%s); using SSE", exc)
            upstream.close("falling back to SSE")
            try:
                upstream = connect(settings, http, "sse")
            except UpstreamError as err:
                logger.error("%s", err)
                return 1
            upstream.send(first)
    bridge(down, upstream).join()
    if down.close_reason == "stdin closed":
        return 0
    logger.error("stopped: %s", upstream.close_reason or down.close_reason)
    return 1
