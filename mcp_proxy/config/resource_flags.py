"""The ``--oauth-*`` flags of server mode turned into :class:`ResourceSettings`, refusing
what cannot work with one line that names the fix.

An issuer and an introspection endpoint are spoken to over HTTPS; plain HTTP is taken only
on a loopback host (a test or a sidecar), since whoever can rewrite the JWKS in transit can
sign tokens. Scopes and the audience go into ``WWW-Authenticate`` answers, so they hold only
the characters RFC 6749 allows in a scope (no space, no quote, no backslash).
"""

from __future__ import annotations

import argparse
import re
from urllib.parse import urlsplit

from mcp_proxy.config.settings import ResourceSettings, ServerSpec
from mcp_proxy.errors import ConfigError

_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749's scope-token
OAUTH_HINT = ("--oauth-issuer needs PyJWT and cryptography, the 'oauth' extra: in the clone, "
              "uv tool install --reinstall '.[oauth]' (or pipx install --force '.[oauth]', "
              "or pip install '.[oauth]')")


def _check_endpoint(flag: str, url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not one)
    except ValueError:
        raise ConfigError(f"{flag} {url[:100]!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} {url[:100]!r}: expected an https:// URL, e.g. "
                          f"https://login.example.com/realms/mcp")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(f"{flag} {url[:100]!r}: an authorization server is reached over "
                          f"https (plain http only on a loopback host)")
    if parts.query or parts.fragment or "?" in url or "#" in url or parts.username:
        raise ConfigError(f"{flag} {url[:100]!r}: no query, fragment or user in this URL")
    return url


def check_server_scopes(servers: dict[str, ServerSpec], oauth: ResourceSettings | None) -> None:
    """A server's ``"scopes"`` and ``"toolScopes"`` mean something only with tokens to read
    them from."""
    if oauth is None:
        for name, spec in servers.items():
            field = "scopes" if spec.scopes else "toolScopes" if spec.tool_scopes else None
            if field is not None:
                raise ConfigError(f'server {name!r}: "{field}" needs --oauth-issuer (the '
                                  f'authorization server whose tokens carry them)')


def check_audience(oauth: ResourceSettings | None, host: str, allow_hosts: list[str]) -> None:
    """The default audience is the URL the client reached, read from its Host header: only
    where Host is checked (a loopback bind, or the names of --allow-host) can it be trusted."""
    if oauth is not None and oauth.audience is None \
            and (host in ("0.0.0.0", "::", "") or "*" in allow_hosts):
        raise ConfigError("--oauth-issuer on a proxy that takes any Host header (--host "
                          f"{host or repr(host)} or --allow-host '*') needs --oauth-audience, "
                          "its public URL (e.g. https://mcp.example.com/mcp): an audience "
                          "read from a Host header anyone can set would take tokens minted "
                          "for other servers")


def resource_settings(ns: argparse.Namespace) -> ResourceSettings | None:
    """The resource server's settings, or None when no ``--oauth-issuer`` was given."""
    given = [flag for flag, value in (
        ("--oauth-audience", ns.oauth_audience), ("--oauth-scope", ns.oauth_scope),
        ("--oauth-admin-scope", ns.oauth_admin_scope),
        ("--oauth-introspection-url", ns.oauth_introspection_url),
        ("--oauth-introspection-client-id", ns.oauth_introspection_client_id)) if value]
    if not ns.oauth_issuer:
        if given:
            raise ConfigError(f"{given[0]} needs --oauth-issuer (the authorization server "
                              f"whose tokens are taken)")
        return None
    try:
        import jwt  # noqa: F401 (server/tokens.py's; missing, every token would fail)
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: F401
    except ImportError as exc:
        raise ConfigError(OAUTH_HINT) from exc
    for scope in ns.oauth_scope:
        if not _TOKEN.fullmatch(scope):
            raise ConfigError(f"--oauth-scope {scope[:100]!r}: a scope is printable ASCII "
                              f"without spaces, quotes or backslashes")
    admin = ns.oauth_admin_scope
    if admin is not None and not _TOKEN.fullmatch(admin):
        raise ConfigError(f"--oauth-admin-scope {admin[:100]!r}: a scope is printable ASCII "
                          f"without spaces, quotes or backslashes")
    if ns.oauth_audience is not None and not _TOKEN.fullmatch(ns.oauth_audience):
        raise ConfigError(f"--oauth-audience {ns.oauth_audience[:100]!r}: an audience is "
                          f"printable ASCII without spaces, quotes or backslashes")
    introspection = ns.oauth_introspection_url
    if introspection:
        _check_endpoint("--oauth-introspection-url", introspection)
        if not (ns.oauth_introspection_client_id and ns.oauth_introspection_client_secret):
            raise ConfigError("--oauth-introspection-url needs --oauth-introspection-client-id "
                              "and --oauth-introspection-client-secret (or "
                              "MCP_PROXY_INTROSPECTION_SECRET)")
    return ResourceSettings(
        issuer=_check_endpoint("--oauth-issuer", ns.oauth_issuer),
        audience=ns.oauth_audience, scopes=list(dict.fromkeys(ns.oauth_scope)),
        introspection_url=introspection or None,
        client_id=ns.oauth_introspection_client_id if introspection else None,
        client_secret=ns.oauth_introspection_client_secret if introspection else None,
        admin_scope=admin)
