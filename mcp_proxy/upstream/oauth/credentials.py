"""The client credentials grant: a token for the proxy itself, with a secret or a key; or,
with ``--idp-token-url``, the user's enterprise sign-in as that client (``enterprise.py``).

Without ``--token-url`` the token endpoint, the auth method and the resource come from the
remote's metadata (the same discovery as sign-in). With ``--token-url`` and a secret, the
secret goes in the body as mcp-proxy 0.13 did, and a refusal is retried once with HTTP Basic
for servers that accept only ``client_secret_basic``.
"""

from __future__ import annotations

import logging
import threading
import time

import requests
from requests.auth import AuthBase

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import AuthError, ConfigError, OAuthError, UpstreamError
from mcp_proxy.upstream.oauth.discovery import Discovery, discover
from mcp_proxy.upstream.oauth.enterprise import EnterpriseSignIn
from mcp_proxy.upstream.oauth.traced_step import traced
from mcp_proxy.upstream.oauth.wire import (
    Client,
    bearer_challenge,
    choose_method,
    load_key,
    resend,
    token_request,
)
from mcp_proxy.upstream.proxy_env import plain_session

logger = logging.getLogger(__name__)


class ClientCredentials(AuthBase):
    """OAuth2 client-credentials grant: a cached bearer token, refreshed before it expires."""

    def __init__(self, settings: ClientSettings) -> None:
        if not (settings.client_secret or settings.client_key):
            raise ConfigError("--client-id needs --client-secret or --client-key")
        if settings.client_secret and settings.client_key:
            raise ConfigError("give --client-secret or --client-key, not both")
        self.settings = settings
        self.http = plain_session(settings)
        self.client = Client(settings.client_id, secret=settings.client_secret)
        if settings.client_key:
            self.client.key_pem, self.client.key_alg = load_key(settings.client_key,
                                                                settings.client_key_alg)
        self.token_url = settings.token_url
        self.resource: str | None = None
        self._basic_fallback = bool(self.token_url and settings.client_secret)
        if self.token_url:
            self.client.method = "private_key_jwt" if settings.client_key \
                else "client_secret_post"
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()  # monkey-patched: a greenlet lock
        self.found: Discovery | None = None
        self.scope: str | None = None  # what the remote's challenge asked for
        self.enterprise = EnterpriseSignIn(settings, self.http, self.client) \
            if settings.idp_token_url else None

    def token(self, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or time.monotonic() > self._expires:
                self._fetch(self._token if refresh else None)
            return self._token

    def bearer(self) -> str:
        """The token for the next request (the fast POSTs ask for it: poster.py)."""
        return self.token()

    def _found(self) -> Discovery:
        try:
            probe = self.http.get(self.settings.url, stream=True,
                                  headers={"Accept": "text/event-stream"})
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot connect: {self.http.describe(exc)}") from exc
        probe.close()
        challenge = bearer_challenge(probe) if probe.status_code == 401 else {}
        self.scope = challenge.get("scope") or self.scope
        return discover(self.http, self.settings.url, challenge)

    def _discover(self) -> Discovery:
        found = self.found = self._found()
        self.token_url, self.resource = found.endpoint("token_endpoint"), found.resource
        # no metadata anywhere: the endpoint is the spec's default, and there is no issuer
        # identifier to name, only a guessed origin: RFC 7523's other audience, the endpoint
        self.client.audience = self.token_url if found.guessed else found.identifier()
        supported = found.metadata.get("token_endpoint_auth_methods_supported")
        self.client.method = choose_method(supported, self.client)
        logger.info("token endpoint %s (client authentication %s)", self.token_url,
                    self.client.method)
        return found

    def _discovered(self) -> tuple[Discovery, str | None]:
        """The authorization server (discovered once), and the scope to ask for."""
        found = self.found or self._discover()
        return found, self.scope or " ".join(found.scopes_supported or []) or None

    def _audience_of_given_endpoint(self) -> None:
        """--token-url with a key: the issuer whose metadata (found from the remote's) names
        that endpoint, else the endpoint itself (RFC 7523's first rule)."""
        try:
            found = self._found()
        except UpstreamError as exc:  # no metadata to learn the issuer from
            logger.info("no authorization server metadata (%s)", exc)
            found = None
        same = found is not None and not found.guessed \
            and found.endpoint("token_endpoint") == self.token_url
        self.client.audience = found.identifier() if same else self.token_url
        logger.info("client assertions name %s as their audience", self.client.audience)

    @traced("oauth client credentials")
    def _fetch(self, refused: str | None = None) -> None:
        if self.enterprise is not None:
            record = self.enterprise.token(self._discovered, refused)
            expires = record.get("expires_at")
            return self._keep(record["access_token"],
                              expires - time.time() if expires is not None else None)
        if not self.token_url:
            self._discover()
        elif self.client.key_pem is not None and self.client.audience is None:
            self._audience_of_given_endpoint()
        form = {"grant_type": "client_credentials"}
        if self.resource:
            form["resource"] = self.resource
        try:
            body = token_request(self.http, self.token_url, self.client, form, "token request")
        except OAuthError as exc:
            if not self._basic_fallback:
                raise AuthError(f"token endpoint refused the client credentials ({exc})") \
                    from None
            self._basic_fallback = False
            self.client.method = "client_secret_basic"
            logger.info("token endpoint refused the secret in the body; trying HTTP Basic")
            return self._fetch()
        self._basic_fallback = False  # this method works: keep it
        self._keep(body["access_token"], body.get("expires_in"))

    def _keep(self, token: str, lifetime: float | None) -> None:
        self._token = token
        lifetime = float(lifetime or 3600)
        self._expires = time.monotonic() + max(lifetime - 30, lifetime / 2)
        logger.info("obtained an OAuth2 access token (valid %.0f s)", lifetime)

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response, **kwargs):
        """A token revoked before its expiry: fetch a new one and resend once."""
        if response.status_code != 401 or getattr(response.request, "_auth_retried", False):
            return response
        return resend(response, self.token(refresh=True), **kwargs)
