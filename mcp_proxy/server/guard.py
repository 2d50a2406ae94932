"""Request guards that run before any view: DNS-rebinding (Host, Origin), routing, auth, CORS.

This module owns who may reach the app and the answers to those refused (421, 403, 404, 405,
401) and to a preflight; it never looks at a body or a session.

By default only loopback names may reach a proxy bound to loopback, and only loopback web
pages (or origins named with --allow-origin) may call it from a browser. A request without
an Origin header is not from a browser page and passes the Origin check. A path we do not
serve gets 404, a method its path does not take 405 naming the ones it does, before the
token check: the URL layout is public, and a preflight carries no token. The probes
(/healthz, /readyz, /metrics) pass every check: load balancers and kubelets call them by
address, without a token. They say nothing a session could use.

With API keys (api_keys.py) every other request needs one: none or an unknown one gets 401
with ``WWW-Authenticate: Bearer``, a key that does not open the server the path is under (or
``/status``, when admin keys are set) 403. The request's caller is then
``environ["mcp_proxy.auth"]``: what sessions belong to and what crosses the bus.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.server.api_keys import ACCEPTED, UNAUTHORIZED, KeyRing
from mcp_proxy.server.resource_meta import ResourceServer
from mcp_proxy.server.resource_urls import WELL_KNOWN, request_host
from mcp_proxy.server.responses import text_error
from mcp_proxy.server.url_adapter import allowed_methods

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
# the probes' endpoints (probes.py), which pass every check
PROBE_ENDPOINTS = frozenset(("healthz", "readyz", "metrics"))
WILDCARD_BINDS = ("0.0.0.0", "::", "")


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


def _allow(methods) -> str:
    return ", ".join(sorted(methods or ()))


def served_under(path: str) -> str:
    """The configured server a path is under: ``/servers/NAME/...``, else "" (the default)."""
    return path[9:].partition("/")[0] if path.startswith("/servers/") else ""


def refuse(error: HTTPException) -> Response:
    """The one answer to a routing error: 404 for a path we do not serve, 405 whose ``Allow``
    names exactly the methods the path takes."""
    if isinstance(error, MethodNotAllowed):
        return text_error(405, "Method Not Allowed", Allow=_allow(error.valid_methods))
    return text_error(404, "Not Found")


class Checks:
    """The checks of one app, for a caller outside Flask (scaleout/router.py forwards before Flask):
    ``where(environ)`` (Host, Origin), ``token(environ)``, and ``cors(environ, response)``."""

    def __init__(self, where, token, cors) -> None:
        self.where, self.token, self.cors = where, token, cors


def install_guard(app: Flask, settings: ServerSettings, touch: Callable[[], None],
                  keys: KeyRing | None = None) -> Checks:
    """Check every request before its view; ``touch`` is called for each one that passes."""
    hosts = allowed_hosts(settings)
    origins = [o.rstrip("/") for o in settings.allow_origins]
    expose = ", ".join(settings.expose_headers)
    checked_hosts: dict[str, bool] = {}  # clients repeat one Host header; bounded below

    def host_ok(host: str) -> bool:
        allowed = checked_hosts.get(host)
        if allowed is None:
            if len(checked_hosts) >= 256:
                checked_hosts.clear()
            allowed = checked_hosts[host] = _matches(_host_name(host), hosts)
        return allowed

    def origin_ok(origin: str, host: str) -> bool:
        if _matches(origin, origins):
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        name = _host_name(parts.netloc)
        return name in LOOPBACK or parts.netloc == host

    app.register_error_handler(404, refuse)
    app.register_error_handler(405, refuse)

    def where(environ: dict) -> Response | None:
        host = request_host(environ)
        if not host_ok(host):
            return text_error(421, "Invalid Host header")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not origin_ok(origin.rstrip("/").lower(), host):
            return text_error(403, "Invalid Origin header")
        return None

    oauth = ResourceServer(app, settings) if settings.oauth is not None else None

    def token(environ: dict, status: bool = False) -> Response | None:
        if oauth is not None and environ.get("PATH_INFO", "").startswith(WELL_KNOWN):
            return None  # the metadata is public: it is how a client learns to sign in
        # with OAuth too, a request that carries no key of ours is the token check's
        matched = None if keys is None or oauth is None else keys.match(environ)
        if keys is not None and (matched is None or matched[0] is not None):
            verdict = keys.check(environ, None if status else
                                 served_under(environ.get("PATH_INFO", "")), matched)
            if verdict == UNAUTHORIZED:
                return text_error(401, "Unauthorized: a valid bearer token is required",
                                  **{"WWW-Authenticate": 'Bearer realm="mcp-proxy"'})
            if verdict != ACCEPTED:
                return text_error(403, "Forbidden: this key does not open "
                                  + ("/status" if status else "this server"))
        elif oauth is not None:  # callers sign in with OAuth tokens (resource_meta.py)
            refused = oauth.check(environ)
            if refused is not None:
                return refused
        touch()
        return None

    @app.before_request
    def guard() -> Response | None:
        req = request._get_current_object()  # one context lookup, not one per attribute
        environ = req.environ
        endpoint = req.endpoint
        if endpoint in PROBE_ENDPOINTS:
            return None  # not API use either: leave the activity clock alone
        refused = where(environ)
        if refused is not None:
            return refused
        if req.routing_exception is not None:
            raise req.routing_exception  # answered by refuse() (or a slash redirect)
        if environ["REQUEST_METHOD"] == "OPTIONS":
            methods = allowed_methods(app, req)
            return Response(status=204, headers={
                "Access-Control-Allow-Methods": _allow(methods),
                "Access-Control-Allow-Headers": environ.get(
                    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "*"),
                "Access-Control-Max-Age": "600",
            })
        return token(environ, status=endpoint == "status")

    def cors(environ: dict, response: Response) -> Response:
        origin = environ.get("HTTP_ORIGIN")
        if origin and (_matches(origin.rstrip("/"), origins) or "*" in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Expose-Headers"] = expose
            response.headers.add("Vary", "Origin")
        return response

    if origins:  # else no CORS headers to add to any answer
        app.after_request(lambda response: cors(request.environ, response))
    return Checks(where, token, cors if origins else None)
