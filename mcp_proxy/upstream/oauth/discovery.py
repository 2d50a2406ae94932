"""Finding the authorization server of an MCP server, as the spec's revisions require.

Protected resource metadata (RFC 9728: the challenge's URL, the path form, the root form),
then the authorization server's metadata (RFC 8414 and OpenID discovery, in the spec's order),
and for a 2025-03-26 server without either, its origin's metadata or the default endpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests

from mcp_proxy.errors import AuthError, UpstreamError
from mcp_proxy.upstream.oauth.traced_step import traced

logger = logging.getLogger(__name__)

PRM = "/.well-known/oauth-protected-resource"
HEADERS = {"Accept": "application/json", "MCP-Protocol-Version": "2025-11-25"}


@dataclass
class Discovery:
    """What sign-in needs to know about the server and its authorization server."""

    resource: str  # sent as RFC 8707 ``resource`` on authorize, token and refresh requests
    issuer: str
    metadata: dict  # the authorization server's metadata (or the legacy defaults)
    scopes_supported: list[str] | None = None  # from the protected resource metadata
    legacy: bool = False
    guessed: bool = False  # no metadata anywhere: the spec's default endpoints, untried

    def endpoint(self, name: str) -> str | None:
        value = self.metadata.get(name)
        return value if isinstance(value, str) and value else None

    def identifier(self) -> str:
        """The issuer identifier exactly as the authorization server's metadata spells it."""
        issuer = self.metadata.get("issuer")
        return issuer if isinstance(issuer, str) and issuer else self.issuer


def canonical(url: str) -> str:
    """The MCP URL as a resource indicator: scheme and host lower-cased, no fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def resource_covers(resource: str, url: str) -> bool:
    """The metadata's resource is the server's URL or a parent path of it on the same origin."""
    want, got = urlsplit(canonical(url)), urlsplit(canonical(resource))
    if origin(url) != origin(resource):
        return False
    prefix = got.path.rstrip("/") + "/"
    return (want.path.rstrip("/") + "/").startswith(prefix)


def _get_json(http: requests.Session, url: str) -> tuple[int, dict | None]:
    try:
        answer = http.get(url, headers=HEADERS, allow_redirects=False)
    except requests.RequestException as exc:
        raise UpstreamError(f"discovery: GET {url} failed: {http.describe(exc)}") from exc
    with answer:
        if answer.status_code != 200:
            return answer.status_code, None
        try:
            body = answer.json()
        except ValueError:
            return 200, None
    return 200, body if isinstance(body, dict) else None


def resource_metadata(http: requests.Session, url: str, challenge: dict) -> dict | None:
    """RFC 9728 metadata: the challenge's URL, then the path form, then the root form."""
    parts = urlsplit(url)
    candidates = []
    if challenge.get("resource_metadata"):
        candidates.append(challenge["resource_metadata"])
    path = parts.path.rstrip("/")
    if path:
        candidates.append(f"{origin(url)}{PRM}{path}")
    candidates.append(f"{origin(url)}{PRM}")
    server_errors = []
    for candidate in candidates:
        status, body = _get_json(http, candidate)
        if body is not None and isinstance(body.get("authorization_servers"), list) \
                and body["authorization_servers"]:
            return body
        if status >= 500 or status == 429:
            server_errors.append(f"{candidate}: HTTP {status}")
    if server_errors:  # a server error is not "no metadata"
        raise UpstreamError("discovery: " + "; ".join(server_errors))
    return None


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 and OpenID discovery URLs for an issuer, in the spec's order."""
    parts = urlsplit(issuer)
    base, path = origin(issuer), parts.path.rstrip("/")
    if not path:
        return [f"{base}/.well-known/oauth-authorization-server",
                f"{base}/.well-known/openid-configuration"]
    return [f"{base}/.well-known/oauth-authorization-server{path}",
            f"{base}/.well-known/openid-configuration{path}",
            f"{base}{path}/.well-known/openid-configuration"]


def issuers_match(claimed: object, expected: str) -> bool:
    """Exact, except that a root issuer may come with or without its trailing slash."""
    if claimed == expected:
        return True
    return isinstance(claimed, str) and not urlsplit(expected).path.strip("/") \
        and claimed.rstrip("/") == expected.rstrip("/")


def server_metadata(http: requests.Session, issuer: str) -> dict | None:
    for candidate in metadata_urls(issuer):
        status, body = _get_json(http, candidate)
        if body is not None:
            if issuers_match(body.get("issuer"), issuer):
                return body
            logger.warning("discovery: %s names issuer %r, not %r; not used", candidate,
                           body.get("issuer"), issuer)
        elif status >= 500:
            raise UpstreamError(f"discovery: {candidate}: HTTP {status}")
    return None


@traced("oauth discovery", after=lambda found: {"oauth.issuer": found.issuer,
                                              "oauth.legacy": found.legacy})
def discover(http: requests.Session, url: str, challenge: dict) -> Discovery:
    """Everything sign-in needs, or AuthError / UpstreamError saying what is missing."""
    prm = resource_metadata(http, url, challenge)
    if prm is not None:
        resource = prm.get("resource")
        if not isinstance(resource, str) or not resource_covers(resource, url):
            raise AuthError(f"the server's protected resource metadata names resource "
                            f"{resource!r}, which is not {url}: refusing to sign in")
        issuer = prm["authorization_servers"][0]
        metadata = server_metadata(http, issuer)
        if metadata is None:
            raise AuthError(f"authorization server {issuer} publishes no metadata")
        found = Discovery(resource, issuer, metadata, _strings(prm.get("scopes_supported")))
    else:  # a 2025-03-26 server: metadata at its origin, else the default endpoints
        base = origin(url)
        metadata = server_metadata(http, base)
        if metadata is None:
            logger.info("discovery: no metadata; using %s/authorize, /token and /register",
                        base)
            metadata = {"issuer": base, "authorization_endpoint": base + "/authorize",
                        "token_endpoint": base + "/token",
                        "registration_endpoint": base + "/register",
                        "code_challenge_methods_supported": ["S256"]}
            found = Discovery(canonical(url), base, metadata, legacy=True, guessed=True)
        else:
            found = Discovery(canonical(url), metadata.get("issuer") or base, metadata,
                              legacy=True)
    if not found.endpoint("token_endpoint"):
        raise AuthError(f"authorization server {found.issuer} names no token endpoint")
    return found


def check_pkce(found: Discovery) -> None:
    """Sign-in needs S256 PKCE (MCP 2025-11-25): refuse a server that does not offer it."""
    if "S256" not in (found.metadata.get("code_challenge_methods_supported") or []):
        raise AuthError(f"authorization server {found.issuer} does not offer PKCE with S256 "
                        f"(code_challenge_methods_supported): refusing to sign in")
    if not found.endpoint("authorization_endpoint"):
        raise AuthError(f"authorization server {found.issuer} names no authorization endpoint")


def _strings(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None
