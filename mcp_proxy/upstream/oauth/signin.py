"""One interactive sign-in: the client to use, the authorization request, the code exchange.

Client registration goes in the spec's order: a pre-registered client (flags), a Client ID
Metadata Document (when the server advertises support), a cached registration for this
issuer and redirect URI, then Dynamic Client Registration.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import sys
import time
from urllib.parse import urlencode, urlsplit

import requests

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import tracing
from mcp_proxy.errors import NO_TOKEN, AuthError, UpstreamError
from mcp_proxy.upstream.oauth.browser import Callback, open_browser
from mcp_proxy.upstream.oauth.discovery import Discovery, check_pkce
from mcp_proxy.upstream.oauth.store import Store, token_record
from mcp_proxy.upstream.oauth.traced_step import traced
from mcp_proxy.upstream.oauth.wire import DEVICE_GRANT, Client, choose_method, token_request

logger = logging.getLogger(__name__)


def client_file(issuer: str) -> str:
    return f"client-{hashlib.sha256(issuer.encode()).hexdigest()[:16]}.json"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Registrar:
    """Finds or makes the OAuth client we sign in as."""

    def __init__(self, settings: ClientSettings, http: requests.Session, store: Store) -> None:
        self.settings, self.http, self.store = settings, http, store

    def known(self, issuer: str, metadata: dict | None = None,
              redirect_uri: str | None = None, device: bool = False) -> Client | None:
        """The client without registering anything (pre-registered, CIMD or cached);
        ``metadata`` None (a refresh) trusts the flags as the sign-in did."""
        settings = self.settings
        if settings.oauth_client_id:
            client = Client(settings.oauth_client_id, secret=settings.oauth_client_secret)
            client.method = choose_method(
                (metadata or {}).get("token_endpoint_auth_methods_supported"), client)
            return client
        if settings.oauth_client_metadata_url and (
                metadata is None or metadata.get("client_id_metadata_document_supported")):
            return Client(settings.oauth_client_metadata_url, "none")
        return self.cached(issuer, redirect_uri, device)

    def cached(self, issuer: str, redirect_uri: str | None = None,
               device: bool = False) -> Client | None:
        """Our registration with this issuer, if it still fits the redirect URI (or, for a
        sign-in with a code, was made for the device grant)."""
        record = self.store.read(client_file(issuer))
        if record and record.get("issuer") == issuer and isinstance(
                record.get("client_id"), str) and (
                redirect_uri is None or redirect_uri in record.get("redirect_uris", [])) and (
                not device or DEVICE_GRANT in (record.get("grant_types") or [])):
            return Client(record["client_id"], record.get("token_endpoint_auth_method")
                          or "none", record.get("client_secret"))
        return None

    def client(self, found: Discovery, redirect_uri: str | None, scope: str | None) -> Client:
        """The client to sign in as; no ``redirect_uri``: a sign-in with a code (RFC 8628)."""
        client = self.known(found.issuer, found.metadata, redirect_uri, redirect_uri is None)
        if client is not None:
            return client
        endpoint = found.endpoint("registration_endpoint")
        if not endpoint:
            raise AuthError(f"authorization server {found.issuer} offers no client "
                            f"registration: give --oauth-client-id (and "
                            f"--oauth-client-secret) of a client registered there")
        return self.register(found, endpoint, redirect_uri, scope)

    @traced("oauth registration", before=lambda self, found, endpoint, *rest: {
        "url.full": tracing.bare_url(endpoint)})
    def register(self, found: Discovery, endpoint: str, redirect_uri: str | None,
                 scope: str | None) -> Client:
        supported = found.metadata.get("token_endpoint_auth_methods_supported")
        method = "none"
        if isinstance(supported, list) and "none" not in supported:
            method = next((m for m in ("client_secret_post", "client_secret_basic")
                           if m in supported), "none")
        body = {"client_name": "mcp-proxy", "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"], "token_endpoint_auth_method": method,
                "application_type": "native"}
        if redirect_uri is None:  # the device grant: no redirect, no authorization response
            del body["redirect_uris"]
            body.update(grant_types=[DEVICE_GRANT, "refresh_token"], response_types=[])
        if scope:
            body["scope"] = scope
        try:
            answer = self.http.post(endpoint, json=body, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise UpstreamError(f"client registration failed: {self.http.describe(exc)}") \
                from exc
        try:
            record = answer.json()
        except ValueError:
            record = None
        if answer.status_code not in (200, 201) or not isinstance(record, dict) \
                or not isinstance(record.get("client_id"), str):
            error = record.get("error") if isinstance(record, dict) else None
            hint = (f": {self.settings.url} answered 401 but publishes no OAuth metadata; if "
                    f"it takes a plain bearer token, {NO_TOKEN}" if found.guessed else "")
            raise AuthError(f"client registration at {endpoint} refused "
                            f"(HTTP {answer.status_code}{', ' + str(error) if error else ''})"
                            f"{hint}")
        method = record.get("token_endpoint_auth_method") or method  # the answer decides
        if method.startswith("client_secret") and not record.get("client_secret"):
            raise AuthError("client registration gave a secret-based client without a secret")
        record.update(issuer=found.issuer, token_endpoint_auth_method=method,
                      redirect_uris=record.get("redirect_uris") or body.get("redirect_uris", []),
                      grant_types=record.get("grant_types") or body["grant_types"],
                      registered_at=time.time())
        self.store.write(client_file(found.issuer), record)
        logger.info("registered as an OAuth client at %s", found.issuer)
        return Client(record["client_id"], method, record.get("client_secret"))


@traced("oauth browser sign-in")
def authorize(settings: ClientSettings, http: requests.Session, store: Store,
              found: Discovery, scope: str | None, port: int, explicit_port: bool) -> dict:
    """Run the browser step and the code exchange; return the token record to keep."""
    check_pkce(found)
    registrar = Registrar(settings, http, store)
    callback = Callback(port, explicit_port)
    try:
        client = registrar.client(found, callback.redirect_uri, scope)
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": client.client_id,
                  "redirect_uri": callback.redirect_uri, "state": callback.state,
                  "code_challenge": challenge, "code_challenge_method": "S256",
                  "resource": found.resource}
        if scope:
            params["scope"] = scope
        endpoint = found.endpoint("authorization_endpoint")
        url = endpoint + ("&" if urlsplit(endpoint).query else "?") + urlencode(params)
        opened = not settings.oauth_no_browser and open_browser(url)
        sys.stderr.write(f"mcp-proxy: sign in to {settings.url} "
                         f"{'in the browser that opened' if opened else 'by opening'}: "
                         f"{url}\n")
        sys.stderr.flush()
        answer = callback.wait(settings.oauth_timeout)
        check_iss(answer, found)
        if "error" in answer:
            raise AuthError(f"sign-in refused by {found.issuer}: {answer['error']}"
                            + (f" ({answer['error_description'][:200]})"
                               if answer.get("error_description") else ""))
        if not answer.get("code"):
            raise AuthError("the sign-in callback brought no code")
        form = {"grant_type": "authorization_code", "code": answer["code"],
                "redirect_uri": callback.redirect_uri, "code_verifier": verifier,
                "resource": found.resource}
        tokens = token_request(http, found.endpoint("token_endpoint"), client, form,
                               "code exchange")
    finally:
        callback.close()
    logger.info("signed in to %s", settings.url)
    return token_record(tokens, found, scope, client)


def check_iss(answer: dict, found: Discovery) -> None:
    """RFC 9207: the response's ``iss`` must be our issuer, and present if promised."""
    if "iss" in answer:
        if answer["iss"] != found.issuer:
            raise AuthError("the sign-in response came from another issuer (iss mismatch)")
    elif found.metadata.get("authorization_response_iss_parameter_supported") is True:
        raise AuthError("the sign-in response lacks the iss its server promised")
