"""The authorization server as a resource server needs it: its metadata and its signing keys.

This module owns fetching and keeping them; it never decides whether a token is good
(tokens.py does). The metadata is found as RFC 8414 says (``/.well-known/oauth-authorization-
server`` inserted before the issuer's path), then by OpenID discovery (``/.well-known/openid-
configuration`` after it), and its ``issuer`` must be the one configured (RFC 8414 §3.3).

The JWKS is fetched at start (resource_meta.py asks; a request waits for that fetch, and
tries again at most every 5 s while it fails), then again only for a ``kid`` it does not
hold, at most once a minute (a stream of forged kids cannot turn the proxy into a load on the
issuer), and the keys held are kept when a refresh fails: an issuer that is down for a while
does not lock out callers whose tokens it signed before.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

import requests
from gevent.lock import BoundedSemaphore

from mcp_proxy.errors import IssuerUnreachable

logger = logging.getLogger(__name__)

REFRESH_INTERVAL = 60.0  # at most one JWKS fetch a minute for an unknown kid
RETRY_INTERVAL = 5.0  # while no keys (or no metadata) were ever had
TIMEOUT = (5.0, 10.0)  # connect, read: a caller waits on the first fetch
MAX_KEYS = 100
MAX_BODY = 1 << 20


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414's form, then OpenID discovery's."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return [urlunsplit((parts.scheme, parts.netloc,
                        "/.well-known/oauth-authorization-server" + path, "", "")),
            urlunsplit((parts.scheme, parts.netloc,
                        path + "/.well-known/openid-configuration", "", ""))]


def _get_json(http: requests.Session, url: str) -> dict | None:
    """A JSON object from ``url``, None for an answer that is not one (404, HTML, ...)."""
    try:
        answer = http.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"},
                          allow_redirects=False, stream=True)
        body = answer.raw.read(MAX_BODY + 1, decode_content=True)
        answer.close()
    except requests.RequestException as exc:
        raise IssuerUnreachable(f"{url}: {exc.__class__.__name__}") from exc
    if answer.status_code >= 500:
        raise IssuerUnreachable(f"{url}: HTTP {answer.status_code}")
    if answer.status_code != 200 or len(body) > MAX_BODY:
        return None
    try:
        found = json.loads(body)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class IssuerKeys:
    """One issuer's metadata and JWKS, fetched when first needed and kept."""

    def __init__(self, issuer: str, http: requests.Session | None = None) -> None:
        self.issuer = issuer
        self.http = http or requests.Session()
        self.http.trust_env = True
        self._metadata: dict | None = None
        self._keys: dict[str, dict] = {}  # kid -> JWK ("" for the keys that have none)
        self._unnamed: list[dict] = []
        self._fetched = False
        self._tried = float("-inf")  # monotonic time of the last fetch, good or not
        self._refreshed = float("-inf")  # ... and of the last one for a kid not held
        self._lock = BoundedSemaphore()

    def _discover(self) -> dict:
        for url in metadata_urls(self.issuer):
            found = _get_json(self.http, url)
            if found is None:
                continue
            if found.get("issuer") != self.issuer:
                raise IssuerUnreachable(f"{url} names issuer {str(found.get('issuer'))[:100]!r},"
                                        f" not {self.issuer!r}")
            logger.info("OAuth: the authorization server's metadata is at %s", url)
            return found
        raise IssuerUnreachable(f"no metadata at {' or '.join(metadata_urls(self.issuer))}")

    def candidates(self, kid: str | None) -> list[dict]:
        """The JWKs that may have signed a token with this ``kid`` (None: every key); the JWKS
        is fetched again for a kid not held, at most once a minute."""
        if kid is not None and kid in self._keys:
            return [self._keys[kid]]
        if not self._fetched:  # the first fetch, or one in progress: wait for it
            with self._lock:
                if not self._fetched and time.monotonic() - self._tried >= RETRY_INTERVAL:
                    self._refresh()
            if not self._fetched:
                raise IssuerUnreachable("the authorization server's keys (JWKS) cannot be "
                                        "fetched")
        elif kid is not None and time.monotonic() - self._refreshed >= REFRESH_INTERVAL:
            with self._lock:
                if kid not in self._keys \
                        and time.monotonic() - self._refreshed >= REFRESH_INTERVAL:
                    self._refreshed = time.monotonic()
                    self._refresh()
        if kid is None:
            return [*self._keys.values(), *self._unnamed]
        return [self._keys[kid]] if kid in self._keys else []

    def _refresh(self) -> None:
        self._tried = time.monotonic()
        try:
            if self._metadata is None:  # found once, then kept
                self._metadata = self._discover()
            jwks_uri = self._metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise IssuerUnreachable("the authorization server's metadata has no jwks_uri")
            found = _get_json(self.http, jwks_uri)
            if found is None or not isinstance(found.get("keys"), list):
                raise IssuerUnreachable(f"{jwks_uri} is not a JWKS")
        except IssuerUnreachable as exc:
            logger.warning("OAuth: could not fetch the signing keys (%s)%s", exc,
                           ": keeping those held" if self._fetched else "")
            return
        keys: dict[str, dict] = {}
        unnamed: list[dict] = []
        for jwk in found["keys"][:MAX_KEYS]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            if isinstance(kid, str):
                keys[kid] = jwk
            else:
                unnamed.append(jwk)
        self._keys, self._unnamed, self._fetched = keys, unnamed, True
        logger.info("OAuth: %d signing key(s) from %s", len(keys) + len(unnamed), jwks_uri)
