"""Request guards that run before any view: DNS-rebinding (Host, Origin), auth, CORS.

By default only loopback names may reach a proxy bound to loopback, and only loopback web
pages (or origins named with --allow-origin) may call it from a browser. A request without
an Origin header is not from a browser page and passes the Origin check.
"""

from __future__ import annotations

import hmac
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from flask import Flask, Response, request

from mcp_proxy.server.http import text_error
from mcp_proxy.settings import ServerSettings

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"


def _host_name(netloc: str) -> str:
    """``host:port`` -> ``host`` (brackets kept for IPv6), lower-cased."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def allowed_hosts(settings: ServerSettings) -> list[str]:
    if settings.host in WILDCARD_BINDS:
        return ["*"]
    host = settings.host.lower()
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return [*LOOPBACK, host, *(h.lower() for h in settings.allow_hosts)]


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def install_guard(app: Flask, settings: ServerSettings) -> None:
    hosts = allowed_hosts(settings)
    origins = [o.rstrip("/") for o in settings.allow_origins]
    expose = ", ".join(settings.expose_headers)
    token = settings.auth_token

    def origin_ok(origin: str) -> bool:
        if _matches(origin, origins):
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        name = _host_name(parts.netloc)
        return name in LOOPBACK or parts.netloc == request.host.lower()

    @app.before_request
    def guard() -> Response | None:
        if request.method == "HEAD":
            return text_error(405, "Method Not Allowed", Allow=ALLOWED_METHODS)
        if not _matches(_host_name(request.host), hosts):
            return text_error(421, "Invalid Host header")
        origin = request.headers.get("Origin")
        if origin is not None and not origin_ok(origin.rstrip("/").lower()):
            return text_error(403, "Invalid Origin header")
        if request.method == "OPTIONS":
            return Response(status=204, headers={
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "*"),
                "Access-Control-Max-Age": "600",
            })
        if token and request.endpoint != "status":
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return text_error(401, "Unauthorized: a valid bearer token is required",
                                  **{"WWW-Authenticate": 'Bearer realm="mcp-proxy"'})
        return None

    @app.after_request
    def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origins and (_matches(origin.rstrip("/"), origins) or "*" in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Expose-Headers"] = expose
            response.headers.add("Vary", "Origin")
        return response
