"""HTTP plumbing of client mode: the requests session, auth, and reading event streams.

Never logs a header value: tokens and passwords stay out of every log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth, HTTPDigestAuth
from sseclient import SSEClient

from mcp_proxy.errors import AuthError, ConfigError, UpstreamError
from mcp_proxy.settings import ClientSettings

logger = logging.getLogger(__name__)


class ClientCredentials(AuthBase):
    """OAuth2 client-credentials grant: a cached bearer token, refreshed before it expires."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, http_timeout,
                 verify: bool | str = True):
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.timeout = http_timeout
        self.verify = verify
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()  # monkey-patched: a greenlet lock

    def token(self, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or time.monotonic() > self._expires:
                self._fetch()
            return self._token

    def _fetch(self) -> None:
        try:
            answer = requests.post(self.token_url, timeout=self.timeout, verify=self.verify, data={
                "grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret})
        except requests.RequestException as exc:
            raise UpstreamError(f"token endpoint unreachable: {exc.__class__.__name__}") from exc
        if answer.status_code in (400, 401, 403):
            raise AuthError(f"token endpoint refused the client credentials "
                            f"({answer.status_code})")
        if answer.status_code != 200:
            raise UpstreamError(f"token endpoint answered {answer.status_code}")
        try:
            body = answer.json()
            self._token = body["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError("token endpoint answer has no access_token") from exc
        lifetime = float(body.get("expires_in") or 3600)
        self._expires = time.monotonic() + max(lifetime - 30, lifetime / 2)
        logger.info("obtained an OAuth2 access token (valid %.0f s)", lifetime)

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response, **kwargs):
        """A token revoked before its expiry: fetch a new one and resend once."""
        if response.status_code != 401 or getattr(response.request, "_token_retried", False):
            return response
        response.content  # noqa: B018  (drain, so the connection can be reused)
        response.close()
        retry = response.request.copy()
        retry._token_retried = True
        retry.headers["Authorization"] = f"Bearer {self.token(refresh=True)}"
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def make_session(settings: ClientSettings) -> requests.Session:
    """A requests session carrying the user's headers, auth and TLS choice."""
    session = requests.Session()
    session.headers.update(settings.headers)
    token = os.environ.get("API_ACCESS_TOKEN")
    if token and "authorization" not in {k.lower() for k in settings.headers}:
        session.headers["Authorization"] = f"Bearer {token}"
    oauth = (settings.client_id, settings.client_secret, settings.token_url)
    if any(oauth):
        if not all(oauth):
            raise ConfigError("OAuth2 needs all of --client-id, --client-secret and --token-url")
        session.auth = ClientCredentials(settings.token_url, settings.client_id,
                                         settings.client_secret, settings.connect_timeout,
                                         settings.verify)
    elif settings.username is not None or settings.password is not None:
        if settings.username is None or settings.password is None:
            raise ConfigError("--username and --password go together")
        auth_class = HTTPDigestAuth if settings.digest else HTTPBasicAuth
        session.auth = auth_class(settings.username, settings.password)
    session.verify = settings.verify
    session.trust_env = False  # no proxies or netrc from the environment behind our back
    return session


def check_status(response: requests.Response, what: str) -> None:
    """Raise AuthError for 401/403, UpstreamError for any other non-2xx status."""
    if response.status_code in (401, 403):
        raise AuthError(f"{what}: the remote refused our credentials ({response.status_code})")
    if response.status_code >= 300:
        raise UpstreamError(f"{what}: HTTP {response.status_code} {response.reason}")


def events(response: requests.Response) -> Iterator:
    """Server-sent events of a streaming response, fed from ``raw.read1`` (not 128-byte reads)."""
    raw = response.raw

    def chunks() -> Iterator[bytes]:
        while True:
            chunk = raw.read1(65536)
            if not chunk:
                return
            yield chunk

    try:
        yield from SSEClient(chunks()).events()
    except (requests.RequestException, OSError, ValueError) as exc:
        raise UpstreamError(f"event stream broken: {exc.__class__.__name__}") from exc
    except Exception as exc:  # urllib3 protocol errors surface as their own classes
        if exc.__class__.__module__.startswith("urllib3"):
            raise UpstreamError(f"event stream broken: {exc.__class__.__name__}") from exc
        raise


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or default.get(pa.scheme)) == \
        (pb.scheme, pb.hostname, pb.port or default.get(pb.scheme))
