"""A remote server of server mode (a config entry with ``"url"``): a remote session per client
session, reached with client mode's links (sse_remote.py, streamable_remote.py), which tell
whoever holds them when the remote is lost and when it is back (watched_remote.py).

``probe()`` runs once at start-up: it learns the transport (``"auto"``: a POST of an
``initialize``, as client mode's first message does; 400, 404 or 405 without a JSON-RPC error
means HTTP+SSE; refused with a JSON-RPC error, the remote speaks only 2026-07-28: ``era``)
and refuses what cannot heal: a 401 with no credentials configured (a browser
or device sign-in cannot run in a server; the error says what to configure instead), refused
credentials, a certificate that fails. An unreachable remote is only logged: the transport is
learnt on the first session then, and remembered. ``link()`` opens one client session's
remote session, with the entry's tool filter on it; its recovery is the link's own. It keeps
the remote's state and last error for ``/status``. It never relays.
"""

from __future__ import annotations

import json
import logging
import time

import requests
from gevent.lock import Semaphore

from mcp_proxy import __version__
from mcp_proxy.config.masking import scrub
from mcp_proxy.config.settings import ClientSettings, ToolRules
from mcp_proxy.core.redact import hide
from mcp_proxy.core.tool_filter import ToolFilter
from mcp_proxy.errors import (
    AuthError,
    ConfigError,
    RemoteUnreachable,
    TlsError,
    UpstreamError,
)
from mcp_proxy.upstream.http_reading import check_status
from mcp_proxy.upstream.http_session import make_session, secrets_of
from mcp_proxy.upstream.remote_link import Upstream
from mcp_proxy.upstream.sse_remote import STREAM_HEADERS, SseUpstream
from mcp_proxy.upstream.streamable_remote import POST_HEADERS, StreamableUpstream, json_rpc_error
from mcp_proxy.upstream.watched_remote import StateHook

logger = logging.getLogger(__name__)

PROBE = json.dumps({"jsonrpc": "2.0", "id": "mcp-proxy-probe", "method": "initialize", "params": {
    "protocolVersion": "2025-03-26", "capabilities": {},
    "clientInfo": {"name": "mcp-proxy", "version": __version__}}}).encode()
PROBE_READ = 10.0  # seconds for the probe's answer head
HOLD = 30.0  # a failed contact makes the server not ready this long (or until one succeeds)


class WatchedSse(StateHook, SseUpstream):
    """A remote HTTP+SSE session of server mode, which tells its loss and return."""


class WatchedStreamable(StateHook, StreamableUpstream):
    """A remote Streamable HTTP session of server mode, which tells its loss and return."""


class RemoteServer:
    """One remote server entry: its transport (learnt once), its state, its sessions."""

    def __init__(self, name: str, settings: ClientSettings, tools: ToolRules) -> None:
        self.name = name or "default"
        self.settings = settings
        hide(secrets_of(settings))  # before its first contact: every log line, from now on
        self.tools = tools
        self.transport = None if settings.transport == "auto" else settings.transport
        # the probe's initialize: "legacy" accepted, "modern" refused with a JSON-RPC error
        self.era: str | None = None
        self.state = "not contacted"
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.links: set[Upstream] = set()
        self._learning = Semaphore()  # the first sessions wait for one probe, not each its own
        self._auth = None  # shared by its sessions: one token for all (client credentials)

    # --- start-up -----------------------------------------------------------------------------

    def probe(self) -> str | None:
        """Reach the remote once; the one line that refuses the start if no retry heals
        what it found, else None."""
        try:
            self._reach(self._http())
        except (AuthError, TlsError) as exc:
            self._failed(exc)
            return self._refusal(exc)
        except ConfigError as exc:  # e.g. a clientKey that is no private key
            self._failed(exc)
            return f"server {self.name!r}: {exc}"
        except UpstreamError as exc:
            self._failed(exc)
            logger.warning("remote server %r (%s) is not reachable yet: %s; its sessions will "
                           "try again", self.name, scrub(self.settings.url), exc)
        return None

    def _refusal(self, exc: UpstreamError) -> str:
        where = f"server {self.name!r}: {scrub(self.settings.url)}"
        if isinstance(exc, TlsError):
            return f"{where}: {exc} (give \"verifySsl\": a CA bundle file, or false)"
        if not self._configured_credentials():
            return (f"{where} asks for a sign-in, and a browser or device sign-in cannot run "
                    f"in a server: configure client credentials (\"clientId\" with "
                    f"\"clientSecret\" or \"clientKey\") or an \"Authorization\" header in "
                    f"\"headers\"")
        return f"{where}: authentication failed: {exc}"

    def _configured_credentials(self) -> bool:
        return self.settings.client_id is not None or any(
            name.lower() == "authorization" for name in self.settings.headers)

    def _reach(self, http: requests.Session) -> str:
        """The remote's transport, learnt now if it is not known: the first contact."""
        with self._learning:
            if self.transport is None:
                self.transport = self._learn(http)
                logger.info("remote server %r speaks %s", self.name, self.transport)
            elif self.state == "not contacted" and self.transport == "sse":
                self._listen(http)
            elif self.state == "not contacted":
                self._learn(http)
            self.state = "connected"
            return self.transport

    def _learn(self, http: requests.Session) -> str:
        url = self.settings.url
        try:
            with http.post(url, data=PROBE, headers=POST_HEADERS, stream=True,
                           timeout=(self.settings.connect_timeout, PROBE_READ)) as response:
                refusal = json_rpc_error(response) if response.status_code in (400, 404, 405) \
                    else None
                if refusal is None and response.status_code in (400, 404, 405) \
                        and self.transport is None:
                    return "sse"
                if refusal is None:
                    check_status(response, f"POST {url}", http)
                self.era = "legacy" if refusal is None else "modern"
                session = response.headers.get("Mcp-Session-Id")
            if session:  # the probe's session is not anyone's: end it
                http.delete(url, headers={"Mcp-Session-Id": session},
                            timeout=(self.settings.connect_timeout, 5))
        except requests.exceptions.SSLError as exc:
            raise TlsError(f"TLS verification failed: {exc}") from exc
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot connect: {exc.__class__.__name__}") from exc
        return "streamablehttp"

    def _listen(self, http: requests.Session) -> None:
        try:
            with http.get(self.settings.url, headers=STREAM_HEADERS, stream=True,
                          timeout=(self.settings.connect_timeout, PROBE_READ)) as response:
                check_status(response, f"GET {self.settings.url}", http)
        except requests.exceptions.SSLError as exc:
            raise TlsError(f"TLS verification failed: {exc}") from exc
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot connect: {exc.__class__.__name__}") from exc

    # --- sessions -----------------------------------------------------------------------------

    def link(self, label: str) -> Upstream:
        """A started remote session for the client session ``label``; RemoteUnreachable if
        the remote cannot be reached within the start timeout."""
        try:
            http = self._http()
            transport = self._reach(http)
            link: Upstream = WatchedSse(self.settings, http) if transport == "sse" else \
                WatchedStreamable(self.settings, http)
            link.name = f"{label}>{self.name}"
            if self.tools:
                link.tool_filter = ToolFilter(self.tools)
            link.start()
        except (UpstreamError, ConfigError) as exc:
            self._failed(exc)
            raise RemoteUnreachable(f"remote server {self.name!r}: {exc}") from exc
        self.state = "connected"
        self.links.add(link)
        link.ended.rawlink(lambda _: self._ended(link))
        return link

    def _ended(self, link: Upstream) -> None:
        self.links.discard(link)
        if link.recovering:  # it closed because the remote did not come back in time
            self._failed(UpstreamError(link.close_reason))

    def _http(self) -> requests.Session:
        """A requests session of its own (cookies, connections) with the shared auth."""
        http = make_session(self.settings, environ_token=False)
        if self._auth is None:
            self._auth = http.auth
        http.auth = self._auth
        return http

    def _failed(self, exc: Exception) -> None:
        self.state = "unreachable"
        self.last_error, self.last_error_at = str(exc), time.time()

    def problem(self) -> str | None:
        """Why a new session would fail now: the last contact failed, lately."""
        if self.state != "unreachable" or time.time() - (self.last_error_at or 0) > HOLD:
            return None
        return f"remote unreachable {time.time() - self.last_error_at:.0f} s ago: " \
               f"{self.last_error}"

    def status(self) -> dict:
        """What ``/status`` shows of it."""
        recovering = sum(1 for link in self.links if link.recovering)
        return {"url": scrub(self.settings.url), "transport": self.transport or "auto",
                "initialize": {"legacy": "accepted", "modern": "refused"}.get(self.era,
                                                                             "unknown"),
                "state": "recovering" if recovering else self.state,
                "remote_sessions": len(self.links), "recovering": recovering,
                "last_error": self.last_error, "last_error_at": self.last_error_at}

    def close_all(self, reason: str) -> None:
        for link in list(self.links):
            link.close(reason)
