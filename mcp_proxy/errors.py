"""The exceptions mcp-proxy raises; every one derives from :class:`ProxyError`.

They come in groups, so a caller catches one class where it means one thing:

- the setup: :class:`ConfigError` (:class:`ConfigProblems`), :class:`SpawnError`;
- what a peer sent that we refuse: :class:`RefusedInput` (a JSON-RPC message, an HTTP
  request, ambiguous JSON, an OAuth access token: :class:`TokenRefused`);
- the authorization server that server mode takes tokens from: :class:`IssuerUnreachable`;
- links and their capacity: :class:`LinkClosed`, :class:`ServerBusy`, :class:`TooManySessions`;
- the remote side of client mode: :class:`RemoteError` (:class:`UpstreamError` and its kinds,
  a broken response, a request the fall-forward bridge cannot carry);
- the bus between workers: :class:`BusError`;
- event streams: :class:`StreamError`.

A class mixes in a builtin only where its meaning really is that builtin.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """Root of every error this package raises on purpose."""


# -- setup ------------------------------------------------------------------------------


class ConfigError(ProxyError, ValueError):
    """The command line, environment or config file asks for something impossible."""


class ConfigProblems(ConfigError):
    """Several problems found at once (a config file, the servers' commands), one line each:
    ``problems`` lists them; the message is the first, with how many more."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more)" if more else ""))


class SpawnError(ProxyError, OSError):
    """The stdio server command could not be started."""


class LegacyOnly(SpawnError):
    """The server did not answer ``server/discover``: it speaks only the 2025 era."""


class RemoteUnreachable(SpawnError):
    """A remote server (a ``"url"`` entry) could not give a new session its remote session."""


class ServerRemoved(SpawnError):
    """A request for a named server that a config reload (SIGHUP) took out of the file."""


# -- what a peer sent ---------------------------------------------------------------------


class RefusedInput(ProxyError, ValueError):
    """Something a peer sent that we refuse; ``str()`` is the reason it may read."""


class AmbiguousJson(RefusedInput):
    """Valid JSON that peers would read differently (strict_json.py); ``str()`` says why."""


class MessageError(RefusedInput):
    """A body is not a JSON-RPC message we can relay; ``code`` is the JSON-RPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadHttpRequest(RefusedInput):
    """An HTTP/1.1 request we refuse (http1.py); the message is the short reason the client
    reads (never its input)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status

    def answer(self) -> bytes:
        """The whole HTTP response that refuses the request and closes the connection."""
        body = f"{self}\n".encode()
        return (f"HTTP/1.1 {self.status} {_REASONS[self.status]}\r\nConnection: close\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                f"\r\n").encode() + body


_REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large"}


class TokenRefused(RefusedInput):
    """A caller's OAuth access token is not one this resource server takes (server/tokens.py);
    ``str()`` is the short reason, which names no part of the token."""


class IssuerUnreachable(ProxyError, ConnectionError):
    """The authorization server's metadata, keys or introspection endpoint cannot be had, so
    a token cannot be checked now (the caller is answered 503, not told to sign in again)."""


# -- links and capacity -------------------------------------------------------------------


class LinkClosed(ProxyError, ConnectionError):
    """A message was sent to a link that has already closed."""


class ErrorAnswer(ProxyError):
    """A server answered one of the proxy's own requests with a JSON-RPC error."""


class ServerBusy(ProxyError):
    """The server took none of its input for the write timeout: the client may retry later."""


class TooManySessions(ProxyError):
    """A new session would pass ``--max-sessions`` (or a server's ``maxSessions``)."""


# -- the remote side of client mode -------------------------------------------------------


class RemoteError(ProxyError):
    """Client mode's remote: unreachable, refusing, broken, or asked what we cannot carry."""


class UpstreamError(RemoteError, ConnectionError):
    """The remote server could not be reached or answered with an error status."""


# The fix for a remote that wants a credential we did not send (said by several refusals).
NO_TOKEN = "pass a token with -H Authorization 'Bearer TOKEN' or API_ACCESS_TOKEN=TOKEN"


class AuthError(UpstreamError):
    """The remote refused our credentials (401 or 403); retrying will not help."""


class OAuthError(AuthError):
    """The authorization server refused a request; ``code`` is its ``error`` value."""

    def __init__(self, what: str, code: str, description: str = "") -> None:
        super().__init__(f"{what}: {code}" + (f" ({description})" if description else ""))
        self.code, self.description = code, description


class SignInRefused(AuthError):
    """The remote refused the token a sign-in of this run just brought: another sign-in
    would only loop (a browser tab each time), so the run ends with this line."""


class Refused(UpstreamError):
    """The remote refused with a 4xx that retrying cannot change (not 404/405/408/429)."""


class TlsError(UpstreamError):
    """The remote's TLS certificate failed verification; retrying will not help."""


class ProxyRefused(UpstreamError):
    """The forward proxy of the environment refused with a 4xx (it wants credentials, or will
    not tunnel to the remote's port): retrying will not help."""


class SessionLost(UpstreamError):
    """The remote session is gone (stream dropped, 404, restart): reconnect and replay."""


class FallbackNeeded(UpstreamError):
    """The remote does not speak Streamable HTTP (400/404/405 to initialize): try SSE."""


class BrokenResponse(RemoteError, ConnectionError):
    """An HTTP response broke off or is not HTTP/1.x; ``args[0]`` says where ("head",
    "chunks", "body")."""


class CannotCarry(RemoteError):
    """A request the fall-forward bridge cannot carry; ``code`` and ``data`` make its
    JSON-RPC error."""

    def __init__(self, text: str, code: int = -32603, data: Any = None) -> None:
        super().__init__(text)
        self.code, self.data = code, data


# -- the bus between workers --------------------------------------------------------------


class BusError(ProxyError):
    """The bus between workers failed one request: Redis, a lost frame, a silent owner."""


class BusDown(BusError):
    """Redis cannot be reached: nothing was sent (``unsure``: it was written, and whether
    Redis took it before the connection failed cannot be known)."""

    def __init__(self, message: str, unsure: bool = False) -> None:
        super().__init__(message)
        self.unsure = unsure


class BlobLost(BusError):
    """A frame's payload key expired (or was taken) before it was read."""


class OwnerSilent(BusError):
    """The owner sent nothing, not even an ``alive``, for three ping intervals."""


# -- event streams ------------------------------------------------------------------------


class StreamError(ProxyError):
    """An event stream of a session cannot carry what was asked of it."""


class StreamEnded(StreamError):
    """The stream was ended: its response was sent, or its session closed."""
