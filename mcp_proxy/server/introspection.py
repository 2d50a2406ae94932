"""RFC 7662 token introspection, for the access tokens that are not JWTs (opaque tokens).

This module owns asking the authorization server about a token, with the proxy's own client
credentials (HTTP Basic, as RFC 7662 and most servers take them), and reading its answer into
claims; tokens.py decides and caches the good answers (a minute at most). A token the server
calls inactive is remembered as such for a minute too, in a bounded set of digests, so a
caller repeating a dead token does not make each of its requests a call to the server.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from urllib.parse import quote_plus

import requests

from mcp_proxy.config.settings import ResourceSettings
from mcp_proxy.errors import IssuerUnreachable, TokenRefused

logger = logging.getLogger(__name__)

LIFETIME = 60.0  # seconds an answer is believed, at most
TIMEOUT = (5.0, 10.0)
MAX_INACTIVE = 10_000


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Introspection:
    """``claims(token)``: the introspection answer of an active token (a dict of claims)."""

    lifetime = LIFETIME

    def __init__(self, settings: ResourceSettings,
                 http: requests.Session | None = None) -> None:
        self.settings = settings
        self.http = http or requests.Session()
        self._inactive: dict[bytes, float] = {}  # token digest -> until (monotonic)
        # RFC 6749 §2.3.1: each part form-encoded, then Basic
        pair = f"{quote_plus(settings.client_id or '')}:{quote_plus(settings.client_secret or '')}"
        self._basic = "Basic " + base64.b64encode(pair.encode()).decode()

    def claims(self, token: str) -> dict:
        digest = hashlib.sha256(token.encode()).digest()
        until = self._inactive.get(digest)
        if until is not None and until > time.monotonic():
            raise TokenRefused("the token is not active")
        answer = self._ask(token)
        if answer.get("active") is not True:
            self._remember_inactive(digest)
            raise TokenRefused("the token is not active")
        issuer = answer.get("iss")
        if issuer is not None and issuer != self.settings.issuer:
            raise TokenRefused("the token is from another issuer")
        now, leeway = time.time(), self.settings.leeway
        exp, nbf = _number(answer.get("exp")), _number(answer.get("nbf"))
        if exp is not None and exp + leeway <= now:
            raise TokenRefused("the token has expired")
        if nbf is not None and nbf - leeway > now:
            raise TokenRefused("the token is not valid yet")
        return answer

    def _remember_inactive(self, digest: bytes) -> None:
        if len(self._inactive) >= MAX_INACTIVE:
            now = time.monotonic()
            self._inactive = {key: until for key, until in self._inactive.items()
                              if until > now}
            while len(self._inactive) >= MAX_INACTIVE // 2:
                del self._inactive[next(iter(self._inactive))]
        self._inactive[digest] = time.monotonic() + LIFETIME

    def _ask(self, token: str) -> dict:
        url = self.settings.introspection_url
        try:
            answer = self.http.post(
                url, timeout=TIMEOUT, allow_redirects=False,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Accept": "application/json", "Authorization": self._basic})
        except requests.RequestException as exc:
            raise IssuerUnreachable(f"introspection: {exc.__class__.__name__}") from exc
        try:
            body = answer.json() if answer.status_code == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            logger.warning("OAuth: the introspection endpoint answered HTTP %s%s",
                           answer.status_code, "" if answer.status_code != 200
                           else " with no JSON object")
            raise IssuerUnreachable(f"introspection: HTTP {answer.status_code}")
        return body
