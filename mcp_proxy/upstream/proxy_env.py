"""The forward proxy of the environment on every request client mode makes, as requests
applies it with ``trust_env``, and a refusal by that proxy as one line that names it. The
proxy variables were read and checked at start (config/network.py: ``settings.proxies``);
``NO_PROXY`` is read here, per origin.

Why not ``trust_env``: it also reads ``~/.netrc`` for every request without auth (credentials
nobody asked us to send), and it reads the environment again on every request. ``EnvSession``
keeps ``trust_env`` off and asks requests' own ``should_bypass_proxies`` once per origin: with
no proxy variable set, a request costs one falsy check more than a plain session's. The CA
variables are the config's too (they become ``settings.verify``).

A proxy URL is shown with its password masked, and never logged whole.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import requests
from requests.utils import select_proxy, should_bypass_proxies

from mcp_proxy.config.network import shown
from mcp_proxy.errors import ProxyRefused

logger = logging.getLogger(__name__)

_TUNNEL = re.compile(r"Tunnel connection failed: (\d{3})\b ?([^'\"\\)]*)")


class EnvSession(requests.Session):
    """A requests session that takes ``proxies`` (``{scheme: (proxy URL, its variable)}``,
    ``settings.proxies``) and ``NO_PROXY`` and nothing else from the environment, and reports
    a proxy's refusal as ``requests.exceptions.ProxyError`` whose text names the proxy
    (``proxy_status``: the proxy's HTTP status, if it gave one)."""

    def __init__(self, proxies: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.trust_env = False  # no netrc, no CA variables behind the config's back
        self.env_proxies = proxies
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
            logger.debug("%s://%s: %s", key[0], key[1].rpartition("@")[2],  # no user part
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
            else:  # requests' ProxyError(MaxRetryError(reason=urllib3's ProxyError(text, cause)))
                reason = getattr(exc.args[0], "reason", None) if exc and exc.args else None
                cause = reason.args[-1] if reason is not None and reason.args else reason
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
    http = EnvSession(settings.proxies)
    http.verify = settings.verify
    send, timeout = http.request, (settings.connect_timeout, 30)

    def request(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return send(*args, **kwargs)

    http.request = request
    return http
