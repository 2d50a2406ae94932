"""The forward proxy of the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
``NO_PROXY``, lower case first) on every request client mode makes, as requests applies them
with ``trust_env``, and a refusal by that proxy as one line that names it.

Why not ``trust_env``: it also reads ``~/.netrc`` for every request without auth (credentials
nobody asked us to send), and it reads the environment again on every request. ``EnvSession``
keeps ``trust_env`` off and asks requests' own functions (``getproxies``,
``should_bypass_proxies``) once per origin: with no proxy variable set, a request costs one
falsy check more than a plain session's. The CA variables are the config's business
(``flag_settings.py``: they become ``verify``).

A proxy URL is shown with its password masked, and never logged whole.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

import requests
from requests.utils import getproxies, prepend_scheme_if_needed, select_proxy, should_bypass_proxies
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from mcp_proxy.errors import ConfigError, ProxyRefused

logger = logging.getLogger(__name__)

SCHEMES = ("http", "https")
_TUNNEL = re.compile(r"Tunnel connection failed: (\d{3})\b ?([^'\"\\)]*)")


def env_proxies() -> dict[str, tuple[str, str]]:
    """``{scheme: (proxy URL, the variable it came from)}`` for http and https, as requests
    would pick them (``<scheme>_proxy``, else ``all_proxy``); ConfigError if one that would be
    used is not an http:// or https:// proxy URL."""
    found = getproxies()
    chosen = {}
    for scheme in SCHEMES:
        for key in (scheme, "all"):
            if found.get(key):
                name = variable_of(key, found[key])
                chosen[scheme] = (check_proxy(name, found[key]), name)
                break
    return chosen


def variable_of(key: str, value: str) -> str:
    for name in (f"{key}_proxy", f"{key.upper()}_PROXY"):
        if os.environ.get(name) == value:
            return name
    return f"{key.upper()}_PROXY"


def shown(proxy: str) -> str:
    """``proxy`` with the password of its user part (up to the last ``@``) masked."""
    scheme, sep, rest = proxy.partition("://")
    if not sep:
        scheme, rest = "", proxy
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return proxy
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def check_proxy(name: str, value: str) -> str:
    """``value`` with its scheme (http:// if none, as requests adds), or ConfigError."""
    masked = shown(value)
    hint = f"; fix {name}, or give --no-proxy-env to ignore the proxy variables"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigError(f"{name}={masked!r} is not a proxy URL (it holds whitespace or a "
                          f"control character){hint}")
    try:
        url = prepend_scheme_if_needed(value, "http")
        parts = parse_url(url)
        port = parts.port
    except (LocationParseError, ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={masked!r} is not a proxy URL ({exc.__class__.__name__})"
                          f"{hint}") from None
    if (parts.scheme or "").lower() not in SCHEMES:
        raise ConfigError(f"{name}={masked!r}: only http:// and https:// proxies are supported"
                          f"{hint}")
    if not parts.host or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"{name}={masked!r} is not a proxy URL (no host, or a bad port)"
                          f"{hint}")
    return url


class EnvSession(requests.Session):
    """A requests session that takes the proxy variables (``use_env``) and nothing else from
    the environment, and reports a proxy's refusal as ``requests.exceptions.ProxyError``
    whose text names the proxy (``proxy_status``: the proxy's HTTP status, if it gave one)."""

    def __init__(self, use_env: bool = True) -> None:
        super().__init__()
        self.trust_env = False  # no netrc, no CA variables behind the config's back
        self.env_proxies = env_proxies() if use_env else {}
        self._routes: dict[tuple[str, str], str | None] = {}

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through, or None (no variable, or NO_PROXY)."""
        if not self.env_proxies:
            return None
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.netloc.lower())
        if key not in self._routes:
            if len(self._routes) > 64:  # a few origins are in use; never grow unbounded
                self._routes.clear()
            chosen = self.env_proxies.get(key[0])
            proxy = chosen[0] if chosen and not should_bypass_proxies(url, None) else None
            self._routes[key] = proxy
            logger.debug("%s://%s: %s", key[0], key[1],
                         f"through the proxy {shown(proxy)}" if proxy else "direct")
        return self._routes[key]

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if self.env_proxies and not proxies:
            proxy = self.proxy_for(url)
            if proxy:
                proxies = {urlsplit(url).scheme.lower(): proxy}
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def rebuild_proxies(self, prepared_request, proxies):
        """A redirect: the proxy (or none) of the new URL's origin."""
        if self.env_proxies:
            proxy = self.proxy_for(prepared_request.url)
            proxies = {urlsplit(prepared_request.url).scheme.lower(): proxy} if proxy else {}
        return super().rebuild_proxies(prepared_request, proxies)

    def send(self, request, **kwargs):
        proxies = kwargs.get("proxies")
        proxy = select_proxy(request.url, proxies) if proxies else None
        if proxy is None:
            return super().send(request, **kwargs)
        try:
            response = super().send(request, **kwargs)
        except requests.exceptions.ProxyError as exc:
            raise self._refusal(request, proxy, exc) from exc
        if response.status_code == 407:  # plain http: the proxy's own answer
            response.close()
            raise self._refusal(request, proxy, None, "407 Proxy Authentication Required")
        if response.status_code >= 500:  # the proxy's own (502 when it cannot connect), or
            # the remote's: through the proxy either way
            response.reason = f"{response.reason} (through the proxy {shown(proxy)})"
        return response

    @staticmethod
    def describe(exc: Exception) -> str:
        """``describe``, for the sign-in's modules: they sit below this one (tests/test_layout.py
        counts the steps) and hold the session, not this module."""
        return describe(exc)

    def _refusal(self, request, proxy: str, exc: Exception | None,
                 status_line: str | None = None) -> requests.exceptions.ProxyError:
        text = str(exc) if exc is not None else ""
        tunnel = _TUNNEL.search(text)
        if tunnel:
            status_line = f"{tunnel.group(1)} {tunnel.group(2).strip()}".strip()
        scheme = urlsplit(request.url).scheme.lower()
        origin = self.env_proxies.get(scheme, ("", "the proxy variables"))[1]
        named = f"the proxy {shown(proxy)} (from {origin})"
        if status_line is not None:
            status = int(status_line[:3])
            why = f"{named} refused to carry the request: {status_line}"
            if status == 407:
                why += "; put its user and password in the URL (http://user:password@host:port)"
        else:
            status = None
            if "refused" in text.lower():
                why = f"{named} refused the connection (is it running?)"
            elif "timed out" in text.lower() or "timeout" in text.lower():
                why = f"{named} did not answer in time"
            elif "resolve" in text.lower() or "name or service" in text.lower():
                why = f"{named}: its host name does not resolve"
            else:
                cause = exc.__context__ if exc is not None else None
                why = f"cannot reach {named} ({(cause or exc).__class__.__name__})"
        error = requests.exceptions.ProxyError(why, request=request)
        error.proxy_status = status
        return error


def describe(exc: Exception) -> str:
    """What a failed request says in an error: the requests exception's name, and for a
    proxy's refusal the line that names the proxy."""
    if isinstance(exc, requests.exceptions.ProxyError) and hasattr(exc, "proxy_status"):
        return f"{exc.__class__.__name__}: {exc}"
    return exc.__class__.__name__


def refused_for_good(exc: Exception) -> ProxyRefused | None:
    """A ProxyRefused if the proxy refused with a 4xx (credentials, a port it will not
    tunnel to): retrying cannot change that."""
    status = getattr(exc, "proxy_status", None)
    if isinstance(exc, requests.exceptions.ProxyError) and status and 400 <= status < 500:
        return ProxyRefused(str(exc))
    return None


def plain_session(settings) -> EnvSession:
    """A session for the authorization server: no user headers, no auth, bounded waits; the
    TLS choice and the proxy of the remote's session."""
    http = EnvSession(settings.proxy_env)
    http.verify = settings.verify
    send, timeout = http.request, (settings.connect_timeout, 30)

    def request(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return send(*args, **kwargs)

    http.request = request
    return http
