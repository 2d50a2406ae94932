"""The proxy as an OAuth 2.1 resource server at the HTTP edge: the token check of each
request, and the protected resource metadata (RFC 9728) a client signs in from.

This module owns the answers about tokens: ``401`` with ``WWW-Authenticate: Bearer
resource_metadata="…", scope="…"`` (and ``error="invalid_token"`` when a token was sent),
``403 insufficient_scope`` naming the scopes to step up to, ``503`` while the authorization
server cannot be reached, and ``/.well-known/oauth-protected-resource`` with its
path-suffixed form for every served endpoint. It never looks at a body or a session; what a
token is worth is tokens.py's. A request let in carries its caller in the environ:
``mcp_proxy.auth`` (the principal: ``sub:`` and a digest of issuer and subject) and
``mcp_proxy.scopes`` (a frozenset). The token itself goes no further than this check: no
server process and no remote ever sees it (frames.py leaves ``Authorization`` out of what
crosses the bus).

A token's audience must name the resource: ``--oauth-audience``, else the canonical URL of
the endpoint called, as the client reaches it (RFC 8707: ``scheme://host[:port]/path``, the
HTTP+SSE POSTs counting as their ``/sse``).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request

from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core.greenlets import spawn
from mcp_proxy.errors import IssuerUnreachable, TokenRefused
from mcp_proxy.server.resource_urls import WELL_KNOWN, endpoint_of, origin_of
from mcp_proxy.server.responses import text_error
from mcp_proxy.server.tokens import TokenVerifier

logger = logging.getLogger(__name__)

STATUS = "/status"


def _reached_port(environ: dict) -> str:
    """The port the client's Host header names (the scheme's default when it names none)."""
    _, colon, port = (environ.get("HTTP_HOST") or "").rpartition(":")
    if colon and port.isdigit():
        return port.lstrip("0") or "0"
    return "443" if environ.get("wsgi.url_scheme") == "https" else "80"


class ResourceServer:
    """The token check (``check``, called by the guard for a request with no API key of
    ours) and the metadata routes of one app."""

    def __init__(self, app: Flask, settings: ServerSettings,
                 verifier: TokenVerifier | None = None) -> None:
        assert settings.oauth is not None
        self.oauth = settings.oauth
        self.verifier = verifier or TokenVerifier(self.oauth)
        # each endpoint's scopes: every --oauth-scope, then its server's "scopes"; what a
        # token may also be for is listed (not required): its tools' "toolScopes"
        self.scopes: dict[str, list[str]] = {}
        self.supported: dict[str, list[str]] = {}
        for name, spec in settings.servers.items():
            for kind in ("mcp", "sse"):
                path = f"{'/servers/' + name if name else ''}/{kind}"
                self.scopes[path] = list(dict.fromkeys([*self.oauth.scopes, *spec.scopes]))
                self.supported[path] = list(dict.fromkeys([*self.scopes[path],
                                                           *spec.tool_scopes.values()]))
        # /status: the admin scope, else any good token ("": a path of no endpoint)
        admin = [self.oauth.admin_scope] if self.oauth.admin_scope else []
        every = [*self.scopes.items(), (STATUS, admin), ("", self.oauth.scopes)]
        self.required = {path: frozenset(scopes) for path, scopes in every}
        self._scope_param = {path: f', scope="{" ".join(scopes)}"' if scopes else ""
                             for path, scopes in every}
        self.root = "/mcp" if "" in settings.servers else ""
        logger.info("OAuth: taking access tokens from %s for %s%s", self.oauth.issuer,
                    self.oauth.audience or "the URL of each endpoint",
                    f", with scope {' '.join(self.oauth.scopes)}" if self.oauth.scopes else "")
        # the metadata and keys now, not on the first request (a wrong issuer shows at start)
        spawn(self._warm, name="oauth-keys")
        app.add_url_rule(WELL_KNOWN, "oauth_resource", self.metadata, methods=["GET"],
                         defaults={"path": ""})
        app.add_url_rule(f"{WELL_KNOWN}/<path:path>", "oauth_resource_path",
                         self.metadata, methods=["GET"])

    def _warm(self) -> None:
        try:
            self.verifier.keys.candidates(None)
        except IssuerUnreachable:
            pass  # logged by issuer_keys.py; requests get 503 until the keys can be had

    def resource(self, origin: str, endpoint: str) -> str:
        audience = self.oauth.audience
        if audience is not None:
            return audience
        return origin + endpoint if endpoint else origin + "/"

    def metadata(self, path: str) -> Response:
        """RFC 9728 metadata of one endpoint (the root form: of ``/mcp``)."""
        path = f"/{path}" if path else self.root
        if path and path not in self.scopes:
            return text_error(404, "Not Found")
        origin = origin_of(request.environ)
        resource = self.resource(origin, path)
        if "://" not in resource:  # an audience that is no URL: the endpoint names itself
            resource = origin + (path or "/")
        answer = jsonify({"resource": resource, "authorization_servers": [self.oauth.issuer],
                          "scopes_supported": self.supported.get(path, self.oauth.scopes),
                          "bearer_methods_supported": ["header"],
                          "resource_name": "mcp-proxy"})
        answer.headers["Access-Control-Allow-Origin"] = "*"  # public, for browser clients
        answer.headers["Cache-Control"] = "max-age=300"
        return answer

    def check(self, environ: dict) -> Response | None:
        """None when the request's token is good here (its caller put in the environ), else
        the answer that refuses it."""
        origin = origin_of(environ)
        endpoint = endpoint_of(environ.get("PATH_INFO", ""))
        sent = environ.get("HTTP_AUTHORIZATION")
        if self.oauth.audience is None and _reached_port(environ) != environ.get("SERVER_PORT"):
            # the default audience is read from Host: one naming another port could make a
            # token minted for another server on this host pass as ours
            return self._refuse(environ, origin, endpoint, "the Host header names another "
                                "port than the proxy's (behind a reverse proxy, give "
                                "--oauth-audience)", "invalid_token" if sent else None)
        if sent is None:
            return self._refuse(environ, origin, endpoint, "no token was sent", None)
        kind, _, token = sent.partition(" ")
        token = token.strip(" ")
        if kind.lower() != "bearer" or not token:
            return self._refuse(environ, origin, endpoint, "the Authorization header is not a "
                                "Bearer token", "invalid_token")
        try:
            grant = self.verifier.verify(token, *self._audiences(origin, endpoint))
        except TokenRefused as exc:
            return self._refuse(environ, origin, endpoint, str(exc), "invalid_token")
        except IssuerUnreachable as exc:
            logger.warning("OAuth: cannot check a token for %s: %s", endpoint, exc)
            return text_error(503, "Service Unavailable: the authorization server cannot be "
                                   "reached to check the token", **{"Retry-After": "5"})
        # a path no endpoint owns (only a forwarded request can have one): every --oauth-scope
        required = self.required.get(endpoint, self.required[""])
        if not required <= grant.scopes:
            missing = " ".join(sorted(required - grant.scopes))
            logger.info("OAuth: refused %s %s from %s: the token lacks scope %s",
                        environ.get("REQUEST_METHOD"), endpoint, _address(environ), missing)
            challenge = (f'Bearer error="insufficient_scope"{self._scope(endpoint)}, '
                         f'resource_metadata="{self._metadata_url(origin, endpoint)}"')
            return text_error(403, f"Forbidden: the token lacks scope {missing}",
                              **{"WWW-Authenticate": challenge})
        environ["mcp_proxy.auth"] = grant.principal
        environ["mcp_proxy.scopes"] = grant.scopes
        return None

    def _audiences(self, origin: str, endpoint: str) -> list[str]:
        """What a token for this endpoint may name: its resource; for /status, which is no
        MCP endpoint a client signs in for, that of any endpoint served here too."""
        if endpoint != STATUS or self.oauth.audience is not None:
            return [self.resource(origin, endpoint)]
        return [self.resource(origin, STATUS), *(origin + path for path in self.scopes)]

    @staticmethod
    def _metadata_url(origin: str, endpoint: str) -> str:
        """Where a client learns to sign in for an endpoint; for /status, which has no
        metadata of its own (a token for any endpoint served opens it), the root form."""
        return f"{origin}{WELL_KNOWN}{'' if endpoint == STATUS else endpoint}"

    def _scope(self, endpoint: str) -> str:
        """The challenge's ``scope`` parameter for the endpoint (empty when none is needed)."""
        return self._scope_param.get(endpoint, self._scope_param[""])

    def _refuse(self, environ: dict, origin: str, endpoint: str, reason: str,
                error: str | None) -> Response:
        logger.info("OAuth: refused %s %s from %s: %s", environ.get("REQUEST_METHOD"),
                    endpoint, _address(environ), reason)
        challenge = f'Bearer resource_metadata="{self._metadata_url(origin, endpoint)}"' \
                    + self._scope(endpoint)
        if error:
            challenge += f', error="{error}", error_description="{reason}"'
        return text_error(401, f"Unauthorized: {reason}", **{"WWW-Authenticate": challenge})


def _address(environ: dict) -> str:
    return environ.get("REMOTE_ADDR") or "?"
