"""The requests session every request to the remote goes through: the user's headers, its
auth (Basic, Digest, a bearer token, the client credentials grant or the OAuth sign-in), its
TLS choice and the proxy of the environment (proxy_env.py). What the remote's responses
mean is http_reading.py's.

Never logs a header value: tokens and passwords stay out of every log line.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import ConfigError
from mcp_proxy.upstream.oauth.auth import OAuthSignIn
from mcp_proxy.upstream.oauth.credentials import ClientCredentials
from mcp_proxy.upstream.proxy_env import EnvSession

logger = logging.getLogger(__name__)


def make_session(settings: ClientSettings, environ_token: bool = True) -> requests.Session:
    """A requests session carrying the user's headers, auth, TLS choice and proxy (and, with
    ``environ_token``, ``API_ACCESS_TOKEN`` as a bearer token when no header gives one)."""
    session = EnvSession(settings.proxies)
    session.headers.update(settings.headers)
    token = os.environ.get("API_ACCESS_TOKEN") if environ_token else None
    if token and "authorization" not in {k.lower() for k in settings.headers}:
        session.headers["Authorization"] = f"Bearer {token}"
    static = "authorization" in {k.lower() for k in session.headers}
    if settings.client_id or settings.client_secret or settings.client_key \
            or settings.token_url:
        if not settings.client_id:
            raise ConfigError("the client credentials grant needs --client-id")
        session.auth = ClientCredentials(settings)
    elif settings.username is not None or settings.password is not None:
        if settings.username is None or settings.password is None:
            raise ConfigError("--username and --password go together")
        auth_class = HTTPDigestAuth if settings.digest else HTTPBasicAuth
        session.auth = auth_class(settings.username, settings.password)
    elif settings.oauth and not static:
        session.auth = OAuthSignIn(settings)
    session.verify = settings.verify
    return session


def secrets_of(settings: ClientSettings) -> list[str]:
    """What must never appear in a log line about this remote (for ``core.redact.Redact``)."""
    parts = urlsplit(settings.url)
    found = [*settings.headers.values(), settings.password, settings.client_secret,
             settings.oauth_client_secret, settings.idp_client_secret,
             os.environ.get("API_ACCESS_TOKEN"), parts.query, parts.password]
    found += [value.split(" ", 1)[1] for value in settings.headers.values() if " " in value]
    # a proxy's password, should a message ever quote its URL
    found += [urlsplit(proxy).password for proxy, _ in settings.proxies.values()]
    return [s for s in found if s]
