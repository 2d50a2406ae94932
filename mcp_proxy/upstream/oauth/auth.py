"""OAuthSignIn: the bearer token on every request to the remote, and what a refusal starts.

A 401 refreshes the token if it can, else signs in: in the browser, or with a code when no
browser opens (``device.py``); one at a time in the process, and across processes through
the cache's lock, held around each refresh and each sign-in (a second instance waits, then
uses the tokens the first one got). A refresh refused with ``invalid_grant`` drops the
tokens and signs in once; if the remote refuses the token that sign-in just brought, the
run ends (``SignInRefused``): signing in again would only open tab after tab. A 403
``insufficient_scope`` signs in again for the union of the scopes (at most twice per method
and tool). The request is resent once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict

from requests.auth import AuthBase

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import AuthError, OAuthError, SignInRefused, UpstreamError
from mcp_proxy.upstream.oauth.browser import default_port
from mcp_proxy.upstream.oauth.device import device_wanted, sign_in_with_code
from mcp_proxy.upstream.oauth.discovery import Discovery, discover
from mcp_proxy.upstream.oauth.signin import Registrar, authorize, client_file
from mcp_proxy.upstream.oauth.store import Store, token_record, well_formed
from mcp_proxy.upstream.oauth.traced_step import traced
from mcp_proxy.upstream.oauth.wire import bearer_challenge, resend, token_request
from mcp_proxy.upstream.proxy_env import plain_session

logger = logging.getLogger(__name__)

LEEWAY = 60.0  # refresh this long before the token expires
STEP_UPS = 2  # per (method, tool): the spec asks for a small retry limit
FAILED_PAUSE = 30.0  # after a failed sign-in, refuse at once this long (no tab storm)
MAX_SIGN_INS = 5  # browser sign-ins per process in SIGN_IN_WINDOW: more means a loop
SIGN_IN_WINDOW = 600.0
LOCK_MARGIN = 30.0  # beyond --oauth-timeout: the lock holder's discovery and token requests
GIVE_UP_WAIT = 5.0  # for the lock, to forget a refused token before the run ends


def scopes(text: str | None) -> list[str]:
    return (text or "").split()


def union(*texts: str | None) -> str | None:
    merged: list[str] = []
    for text in texts:
        merged += [scope for scope in scopes(text) if scope not in merged]
    return " ".join(merged) or None


class OAuthSignIn(AuthBase):
    """requests auth for a remote behind OAuth (authorization code with PKCE)."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        source = settings.oauth_client_id or settings.oauth_client_metadata_url or ""
        self.store = Store(settings.url, source)
        self.http = plain_session(settings)
        self.tokens = self.store.tokens()
        self.found: Discovery | None = None
        self._lock = threading.RLock()  # monkey-patched: a greenlet lock
        self._step_ups: dict[tuple, int] = defaultdict(int)
        self._failed: tuple[float, AuthError] | None = None
        self._fresh: str | None = None  # the token our last sign-in brought, until accepted
        self._refused: str | None = None  # why the run must end (SignInRefused), once known
        self._wait = settings.oauth_timeout + LOCK_MARGIN  # for another instance's lock
        self._sign_ins: list[float] = []  # when the browser sign-ins started

    # --- attaching the token ---------------------------------------------------------------

    def __call__(self, request):
        self.passive(request)
        request.register_hook("response", self._on_response)
        return request

    def passive(self, request):
        """Attach the token we hold (refreshed if due), without reacting to refusals."""
        token = self.bearer()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return request

    def bearer(self) -> str | None:
        tokens = self.tokens
        if tokens and tokens.get("refresh_token") and self._due(tokens):
            with self._lock:
                if self.tokens is tokens:
                    try:
                        self._refresh()
                    except UpstreamError as exc:  # the token may still be good: try it
                        logger.warning("token refresh failed: %s", exc)
        return self.tokens.get("access_token") if self.tokens else None

    @staticmethod
    def _due(tokens: dict) -> bool:
        expires = tokens.get("expires_at")
        return isinstance(expires, (int, float)) and time.time() > expires - LEEWAY

    # --- refusals --------------------------------------------------------------------------

    def _on_response(self, response, **kwargs):
        request = response.request
        if response.status_code not in (401, 403) or getattr(request, "_auth_retried", False):
            return response
        challenge = bearer_challenge(response)
        sent = request.headers.get("Authorization", "")[len("Bearer "):] or None
        if response.status_code == 403:
            if challenge.get("error") != "insufficient_scope":
                return response
            key = _step_key(request)
            if self._step_ups[key] >= STEP_UPS:
                logger.warning("still insufficient scope for %s after %d sign-ins; giving up",
                               "/".join(filter(None, key)) or "this request", STEP_UPS)
                return response
            self._step_ups[key] += 1
            self.renew(challenge, sent, step_up=True)
        else:
            # a GET is a stream we reopen on our own: after a failed sign-in it waits for
            # the client's next request to try again, so no tab opens out of the blue
            self.renew(challenge, sent, background=request.method == "GET")
        token = self.tokens["access_token"]
        again = resend(response, token, **kwargs)
        if token == self._fresh:
            self._fresh = None  # accepted; or refused, and then we stop here
            if again.status_code == 401:
                again.close()
                raise self._give_up(token)
        return again

    def renew(self, challenge: dict, sent: str | None, step_up: bool = False,
              background: bool = False) -> None:
        """Get a token the remote may accept: someone else's, a refreshed one, or a sign-in."""
        with self._lock:
            if self._refused:
                raise SignInRefused(self._refused)
            held = self.tokens
            if held and held.get("access_token") != sent and not self._due(held) and (
                    not step_up or set(scopes(challenge.get("scope"))) <= set(
                        scopes(held.get("scope")))):
                return  # renewed meanwhile by another request
            if not step_up and sent and sent == self._fresh:
                raise self._give_up(sent)
            if not step_up and held and held.get("refresh_token") and self._refresh():
                return
            self._sign_in(challenge, sent, step_up, background)

    @traced("oauth sign-in", before=lambda self, challenge, sent, step_up, *rest: {
        "oauth.step_up": step_up})
    def _sign_in(self, challenge: dict, sent: str | None, step_up: bool,
                 background: bool = False) -> None:
        now = time.monotonic()
        if self._failed and (background or now - self._failed[0] < FAILED_PAUSE):
            raise self._failed[1]
        self._sign_ins = [t for t in self._sign_ins if now - t < SIGN_IN_WINDOW]
        if len(self._sign_ins) >= MAX_SIGN_INS:
            raise AuthError(f"{MAX_SIGN_INS} sign-ins in {SIGN_IN_WINDOW:g} s and the remote "
                            f"still refuses: giving up (restart to try again)")
        self.found = discover(self.http, self.settings.url, challenge)
        logger.info("%s asks for a sign-in%s (authorization server %s)", self.settings.url,
                    " with more scope" if step_up else "", self.found.issuer)
        held = self.tokens or {}
        wanted = challenge.get("scope") or " ".join(self.found.scopes_supported or []) or None
        if step_up:
            wanted = union(held.get("requested_scope"), held.get("scope"), wanted)
        offered = self.found.metadata.get("scopes_supported") or []
        if wanted and "offline_access" in offered and "offline_access" not in scopes(wanted):
            wanted += " offline_access"
        with self.store.lock(self._wait):
            disk = self.store.tokens()
            if disk and disk.get("access_token") not in (sent, held.get("access_token")) \
                    and not self._due(disk) and set(scopes(wanted)) <= set(
                        scopes(disk.get("scope")) + scopes(disk.get("requested_scope"))):
                logger.info("using the sign-in another mcp-proxy just completed")
                self.tokens = disk
                return
            port = self.settings.oauth_callback_port
            self._sign_ins.append(now)
            try:
                if device_wanted(self.settings, self.found):
                    client = Registrar(self.settings, self.http, self.store).client(
                        self.found, None, wanted)  # no redirect URI: for the device grant
                    record = token_record(sign_in_with_code(
                        self.settings, self.http, self.found, client, wanted),
                        self.found, wanted, client)
                else:
                    record = authorize(self.settings, self.http, self.store, self.found,
                                       wanted, port or default_port(self.store.key),
                                       port is not None)
            except OAuthError as exc:
                self._after_error(exc.code, self.found.issuer, held.get("access_token"))
                self._failed = (time.monotonic(), exc)
                raise
            except AuthError as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._failed = None
            self.tokens, self._fresh = record, record["access_token"]
            self.store.write("tokens.json", record)

    @traced("oauth refresh", after=lambda refreshed: {"oauth.refreshed": refreshed})
    def _refresh(self) -> bool:
        """Refresh (once across processes: the lock, then a re-read); False if refused."""
        with self.store.lock(self._wait):
            disk = self.store.tokens()
            if disk and self.tokens and disk.get("access_token") != \
                    self.tokens.get("access_token") and not self._due(disk):
                self.tokens = disk  # another instance refreshed it already
                return True
            tokens = disk or self.tokens
            issuer, endpoint = tokens.get("issuer"), tokens.get("token_endpoint")
            registrar = Registrar(self.settings, self.http, self.store)
            client = registrar.known(issuer or "")
            if client is None or client.client_id != tokens.get("client_id", client.client_id):
                client = registrar.cached(issuer or "")  # e.g. CIMD unsupported: registered
            if client is not None and tokens.get("client_method"):
                client.method = tokens["client_method"]  # as negotiated at sign-in
            if not (issuer and endpoint and client and tokens.get("refresh_token")):
                return False
            form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                    "resource": tokens.get("resource")}
            if tokens.get("scope"):
                form["scope"] = tokens["scope"]
            try:
                answer = token_request(self.http, endpoint, client, form, "token refresh")
            except OAuthError as exc:
                logger.warning("%s", exc)
                self._after_error(exc.code, issuer, tokens.get("access_token"))
                return False
            found = Discovery(tokens.get("resource"), issuer, {"token_endpoint": endpoint})
            self.tokens = token_record(answer, found, tokens.get("requested_scope"), client,
                                       tokens)
            self.store.write("tokens.json", self.tokens)
            logger.info("refreshed the access token for %s", self.settings.url)
            return True

    def _after_error(self, code: str, issuer: str | None, token: str | None) -> None:
        """invalid_grant: the tokens are dead; invalid_client: the registration too."""
        if code in ("invalid_grant", "invalid_client", "unauthorized_client"):
            self._forget_tokens(token)
        if code in ("invalid_client", "unauthorized_client") and issuer:
            self.store.delete(client_file(issuer))

    def _give_up(self, token: str) -> SignInRefused:
        """The remote refused the token our sign-in just brought: forget it, and end."""
        with self._lock:
            self._refused = (f"{self.settings.url} refused the token its sign-in just gave "
                             f"(HTTP 401): another sign-in would be refused too, so mcp-proxy"
                             f" stops; check that this account may use the server, then "
                             f"restart")
            try:  # not for long: whoever holds the lock is writing newer tokens anyway
                self._forget_tokens(token, GIVE_UP_WAIT)
            except AuthError:
                logger.debug("left the cached tokens to the instance holding their lock")
            return SignInRefused(self._refused)

    def _forget_tokens(self, token: str | None, wait: float | None = None) -> None:
        """Drop the tokens of ``token`` here and in the cache (not newer ones another
        instance wrote there meanwhile)."""
        self.tokens = None
        with self.store.lock(self._wait if wait is None else wait):
            disk = self.store.read("tokens.json")
            if disk is not None and (not well_formed(disk) or disk["access_token"] == token):
                self.store.delete("tokens.json")


def _step_key(request) -> tuple:
    """(method, tool or resource) of a JSON-RPC request body, for the step-up limit."""
    try:
        message = json.loads(request.body or b"{}")
        params = message.get("params") or {}
        return message.get("method"), params.get("name") or params.get("uri")
    except (ValueError, AttributeError, TypeError):
        return (request.method, request.url)
