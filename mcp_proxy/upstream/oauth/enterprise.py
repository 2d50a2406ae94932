"""Enterprise-managed sign-in (the MCP extension of SEP-990): the user's ID token from the
company identity provider becomes an access token with no browser step.

Two token requests. First an RFC 8693 token exchange at the identity provider
(``--idp-token-url``, as ``--idp-client-id``): the ID token for an Identity Assertion JWT
Authorization Grant (ID-JAG) whose ``audience`` is the authorization server's issuer and
whose ``resource`` is the MCP server. Then the RFC 7523 ``jwt-bearer`` grant with that ID-JAG
at the authorization server's token endpoint (found by discovery), as ``--client-id`` with
its secret or key. The ID-JAG goes to that token endpoint and nowhere else, and is never
logged. The tokens are cached like the other sign-ins' (``store.py``), shared by the
instances for the same server; one that expires is refreshed if the server gave a refresh
token, else the two steps run again with a fresh ID token.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import requests

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import AuthError, OAuthError, SignInRefused
from mcp_proxy.upstream.oauth.discovery import Discovery
from mcp_proxy.upstream.oauth.id_token import IdTokenSource, is_jwt
from mcp_proxy.upstream.oauth.store import Store, token_record
from mcp_proxy.upstream.oauth.wire import Client, printable, token_request

logger = logging.getLogger(__name__)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523
MARGIN = 10.0  # a cached token with less life left than this is not handed out
TOKENS = "tokens.json"
# a token refused this soon after the sign-in that brought it: an error, no new sign-in
# (MCP_PROXY_FRESH_TOKEN, in seconds, is an internal knob for the tests)
FRESH = float(os.environ.get("MCP_PROXY_FRESH_TOKEN", "30"))


class EnterpriseSignIn:
    """The ID token to ID-JAG to access token chain, and its cache."""

    def __init__(self, settings: ClientSettings, http: requests.Session,
                 client: Client) -> None:
        self.settings, self.http, self.client = settings, http, client
        self.source = IdTokenSource(settings.id_token_file, settings.id_token_command,
                                    settings.oauth_timeout)
        # the identity provider's client: the secret in the body, as the extension's example
        # sends it; HTTP Basic if the provider refuses that (RFC 6749's other method)
        secret = settings.idp_client_secret
        self.idp = Client(settings.idp_client_id, "client_secret_post" if secret else "none",
                          secret)
        self._basic_fallback = bool(secret)
        self.store = Store(settings.url, f"id-jag|{settings.idp_token_url}|{client.client_id}")
        self._fresh: tuple[str, float] | None = None  # our last sign-in's token, and when

    def token(self, discovered: Callable[[], tuple[Discovery, str | None]],
              refused: str | None = None) -> dict:
        """A token record with an access token (not ``refused``, which the remote just
        refused): cached, refreshed, or new from the two steps."""
        if self._fresh and refused == self._fresh[0] \
                and time.monotonic() - self._fresh[1] < FRESH:
            # signing in again would bring the same answer: an error, not a token exchange
            # for every request
            self.store.delete(TOKENS)
            raise SignInRefused("enterprise sign-in: the remote refused the token the "
                                "sign-in just gave")
        with self.store.lock(self.settings.oauth_timeout + 30):
            held = self.store.read(TOKENS)
            if _usable(held) and held["access_token"] != refused:
                return held
            record = None
            if held and isinstance(held.get("refresh_token"), str):
                record = self._refresh(held, discovered()[0])
            if record is None:
                record = self.sign_in(*discovered())
                self._fresh = (record["access_token"], time.monotonic())
            self.store.write(TOKENS, record)
            return record

    def sign_in(self, found: Discovery, scope: str | None) -> dict:
        """The two steps: return the token record."""
        if found.guessed:
            raise AuthError(f"enterprise sign-in: {self.settings.url} publishes no "
                            f"authorization server metadata, so there is no issuer to ask "
                            f"the identity provider for (the ID-JAG's audience)")
        assertion, granted = self.exchange(found, scope)
        form = {"grant_type": JWT_BEARER, "assertion": assertion, "resource": found.resource}
        if granted:
            form["scope"] = granted
        answer = token_request(self.http, found.endpoint("token_endpoint"), self.client, form,
                               "enterprise sign-in: the ID-JAG grant at the authorization "
                               "server")
        logger.info("signed in to %s through the identity provider", self.settings.url)
        return token_record(answer, found, granted, self.client)

    def exchange(self, found: Discovery, scope: str | None,
                 id_token: str | None = None) -> tuple[str, str | None]:
        """RFC 8693 at the identity provider: return the ID-JAG and its scope."""
        id_token = id_token or self.source.read()
        form = {"grant_type": TOKEN_EXCHANGE, "requested_token_type": ID_JAG,
                "subject_token": id_token, "subject_token_type": ID_TOKEN,
                "audience": found.identifier(), "resource": found.resource}
        if scope:
            form["scope"] = scope
        what = "enterprise sign-in: the token exchange at the identity provider"
        try:
            body = token_request(self.http, self.settings.idp_token_url, self.idp, form,
                                 what, bearer=False)
        except OAuthError as exc:
            if not (self._basic_fallback and exc.code in ("invalid_client", "HTTP 401")):
                raise
            self._basic_fallback = False
            self.idp.method = "client_secret_basic"
            logger.info("the identity provider refused the secret in the body; trying HTTP "
                        "Basic")
            return self.exchange(found, scope, id_token)
        self._basic_fallback = False  # this method works: keep it
        issued = body.get("issued_token_type")
        if issued != ID_JAG:
            shown = f"issued_token_type {printable(issued, 80)!r}" if isinstance(issued, str) \
                else "no issued_token_type"
            raise AuthError(f"enterprise sign-in: the identity provider's answer is not an "
                            f"ID-JAG ({shown})")
        assertion = body.get("access_token")
        if not isinstance(assertion, str) or not is_jwt(assertion):
            raise AuthError("enterprise sign-in: the identity provider's answer holds no "
                            "ID-JAG (its access_token is not a JWT)")
        granted = body.get("scope")
        if granted is not None and (not isinstance(granted, str) or not granted.isprintable()):
            raise AuthError("enterprise sign-in: the identity provider's answer has a "
                            "malformed scope")
        return assertion, granted or scope

    def _refresh(self, held: dict, found: Discovery) -> dict | None:
        """Refresh with the authorization server's refresh token; None if refused."""
        form = {"grant_type": "refresh_token", "refresh_token": held["refresh_token"],
                "resource": found.resource}
        if isinstance(held.get("scope"), str) and held["scope"]:
            form["scope"] = held["scope"]
        try:
            answer = token_request(self.http, found.endpoint("token_endpoint"), self.client,
                                   form, "token refresh")
        except OAuthError as exc:
            logger.info("%s: signing in through the identity provider again", exc)
            return None
        logger.info("refreshed the access token for %s", self.settings.url)
        return token_record(answer, found, held.get("scope"), self.client, held)


def _usable(record: dict | None) -> bool:
    if not record or not isinstance(record.get("access_token"), str):
        return False
    expires = record.get("expires_at")
    return expires is None or (isinstance(expires, (int, float))
                               and expires - time.time() > MARGIN)

