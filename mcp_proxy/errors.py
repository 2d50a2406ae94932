"""The exceptions mcp-proxy raises; every one derives from :class:`ProxyError`."""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ProxyError, ValueError):
    """The command line, environment or config file asks for something impossible."""


class SpawnError(ProxyError, OSError):
    """The stdio server command could not be started."""


class ServerBusy(ProxyError):
    """The server took none of its input for the write timeout: the client may retry later."""


class TooManySessions(ProxyError):
    """A new session would pass ``--max-sessions`` (or a server's ``maxSessions``)."""


class LinkClosed(ProxyError, ConnectionError):
    """A message was sent to a link that has already closed."""


class MessageError(ProxyError, ValueError):
    """A body is not a JSON-RPC message we can relay; ``code`` is the JSON-RPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UpstreamError(ProxyError, ConnectionError):
    """The remote server could not be reached or answered with an error status."""


# The fix for a remote that wants a credential we did not send (said by several refusals).
NO_TOKEN = "pass a token with -H Authorization 'Bearer TOKEN' or API_ACCESS_TOKEN=TOKEN"


class AuthError(UpstreamError):
    """The remote refused our credentials (401 or 403); retrying will not help."""


class Refused(UpstreamError):
    """The remote refused with a 4xx that retrying cannot change (not 404/405/408/429)."""


class TlsError(UpstreamError):
    """The remote's TLS certificate failed verification; retrying will not help."""


class SessionLost(UpstreamError):
    """The remote session is gone (stream dropped, 404, restart): reconnect and replay."""


class FallbackNeeded(UpstreamError):
    """The remote does not speak Streamable HTTP (400/404/405 to initialize): try SSE."""
