"""The URLs of the proxy as an OAuth resource server: where a request came in, the endpoint
it belongs to, and where that endpoint's metadata is (RFC 9728).

It owns these names only, for the token check (resource_meta.py) and the refusals of a
tool's scope (tool_scopes.py); it never checks anything.
"""

from __future__ import annotations

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def request_host(environ: dict) -> str:
    """The Host the client asked for, lower-cased, without the scheme's default port (the
    guard's Host check reads it too)."""
    host = (environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "").lower()
    default = ":443" if environ.get("wsgi.url_scheme") == "https" else ":80"
    return host[: -len(default)] if host.endswith(default) else host


def origin_of(environ: dict) -> str:
    """``scheme://host[:port]`` as the client reached us, without the scheme's default port."""
    return f"{environ.get('wsgi.url_scheme', 'http')}://{request_host(environ)}"


def endpoint_of(path: str) -> str:
    """The endpoint a request path belongs to, without a trailing slash: an HTTP+SSE POST
    (``…/messages/``) is its ``…/sse`` stream's."""
    trimmed = path.rstrip("/") or "/"  # /mcp/ is /mcp: one resource, one set of scopes
    base, _, last = trimmed.rpartition("/")
    return f"{base}/sse" if last == "messages" else trimmed
