"""The official SDK's OAuth client provider for sdk_driver.py ``--oauth``: it registers
dynamically, signs in with the authorization code and PKCE, and asks for the resource the
server's metadata names (RFC 8707), with an in-memory store.

The "browser" follows the authorization URL's redirects (loopback only, cookies kept) as a
user who approves would, until it reaches our redirect URI, whose query is the answer: no
callback server is needed, since the SDK takes the code from ``callback_handler``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:33419/callback"  # never listened on: see the docstring


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def provider(server_url: str, visits: list[str]) -> OAuthClientProvider:
    """An OAuthClientProvider for ``server_url``; each URL its browser visits goes in
    ``visits``."""
    answer: dict[str, str] = {}

    async def redirect(url: str) -> None:
        async with httpx2.AsyncClient(timeout=10) as browser:
            for _ in range(10):
                visits.append(url)
                if url.startswith(REDIRECT_URI + "?"):
                    answer.update(parse_qsl(urlsplit(url).query))
                    return
                if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
                    raise RuntimeError(f"the sign-in left loopback: {url}")
                response = await browser.get(url)
                if response.status_code not in (302, 303, 307):
                    raise RuntimeError(f"the sign-in stopped at {url}: {response.status_code}")
                url = urljoin(url, response.headers["location"])
        raise RuntimeError("the sign-in redirected more than 10 times")

    async def callback() -> AuthorizationCodeResult:
        if "code" not in answer:
            raise RuntimeError(f"the sign-in brought no code: {answer}")
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"),
                                       iss=answer.get("iss"))

    metadata = OAuthClientMetadata(client_name="sdk-driver", redirect_uris=[REDIRECT_URI],
                                   grant_types=["authorization_code", "refresh_token"],
                                   token_endpoint_auth_method="none")
    return OAuthClientProvider(server_url, metadata, MemoryStorage(), redirect_handler=redirect,
                               callback_handler=callback)
