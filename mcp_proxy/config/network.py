"""The network variables client mode reads, checked once at start: the forward proxy
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, lower case first, as requests reads them; the
per-URL ``NO_PROXY`` is upstream/proxy_env.py's) and the CA bundle (``--verify-ssl PATH``, else
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE``).

Every refusal is one line naming the variable, a proxy's password masked.
"""

from __future__ import annotations

import os
import ssl

from requests.utils import getproxies, prepend_scheme_if_needed
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from mcp_proxy.errors import ConfigError

SCHEMES = ("http", "https")


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


# read as requests reads the first two (with trust_env) and OpenSSL the third, first set wins
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


def tls_verify(flag: str | None) -> bool | str:
    """``verify`` for every request client mode makes: False for ``--verify-ssl false``, a CA
    bundle for ``--verify-ssl PATH``, else the bundle the first CA variable set names, else
    True (the certifi bundle)."""
    if flag is not None:
        lowered = flag.lower()
        if lowered in ("false", "0", "no", "off"):
            return False
        if lowered not in ("true", "1", "yes", "on"):
            return check_ca_bundle("--verify-ssl", flag)
    for name in CA_VARIABLES:
        value = os.environ.get(name)
        if value:
            return check_ca_bundle(name, value, " (fix or unset it, or give --verify-ssl PATH)")
    return True


def check_ca_bundle(name: str, path: str, fix: str = "") -> str:
    """``path`` if it is a PEM bundle (or a directory of them) that OpenSSL loads."""
    if not os.path.exists(path):
        raise ConfigError(f"{name}: no CA bundle at {path!r}{fix}")
    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{name}: {path!r} is not a CA bundle OpenSSL can load "
                          f"({exc.__class__.__name__}){fix}") from None
    return path
