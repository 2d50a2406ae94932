"""Signing in with a code: the device authorization grant (RFC 8628), for machines where no
browser opens (SSH, containers).

The authorization server hands us a verification URI and a short user code; both go to
stderr (and ``verification_uri_complete`` to a browser, when one can open), the user enters
the code on any device, and meanwhile we poll the token endpoint at the server's ``interval``
(5 s when it names none; ``slow_down`` adds 5 s), the whole bounded by ``--oauth-timeout``
and the code's ``expires_in``. The device endpoint's answer is checked before any of it
reaches the terminal: no control characters, and an https verification URI (http only on a
loopback host). The device code itself is never printed or logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent
import requests

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import tracing
from mcp_proxy.errors import AuthError, OAuthError, UpstreamError
from mcp_proxy.upstream.oauth.browser import can_open_browser, open_browser
from mcp_proxy.upstream.oauth.discovery import Discovery
from mcp_proxy.upstream.oauth.traced_step import traced
from mcp_proxy.upstream.oauth.wire import DEVICE_GRANT, Client, token_request

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2: when the server names none
SLOW_DOWN = 5.0  # RFC 8628 §3.5: added on every slow_down
MIN_INTERVAL = 0.2  # a server that asks for 0 is still not polled in a busy loop
MAX_OUTAGES = 3  # polls in a row that found the token endpoint down: give up
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def device_wanted(settings: ClientSettings, found: Discovery) -> bool:
    """--oauth-device (AuthError if the server does not offer the grant), or, unless
    --no-oauth-device, no browser to open and a server that offers it."""
    offered = bool(found.endpoint("device_authorization_endpoint"))
    if settings.oauth_device and not offered:
        raise AuthError(f"authorization server {found.issuer} does not offer sign-in with a "
                        f"code (no device_authorization_endpoint): leave out --oauth-device")
    if settings.oauth_device is not None:
        return settings.oauth_device
    return offered and (settings.oauth_no_browser or not can_open_browser())


@dataclass
class DeviceCode:
    """A device authorization answer, checked (RFC 8628 §3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float | None
    interval: float

    @classmethod
    def parse(cls, body: object, endpoint: str) -> DeviceCode:
        """AuthError naming the field, for anything missing or malformed."""
        if not isinstance(body, dict):
            raise AuthError(f"device authorization: {endpoint} answered no JSON object")
        # Google's endpoint spells it verification_url
        uri = body.get("verification_uri", body.get("verification_url"))
        complete = body.get("verification_uri_complete")
        return cls(_text(body.get("device_code"), "device_code", 4096),
                   _text(body.get("user_code"), "user_code", 64),
                   _page(uri, "verification_uri"),
                   None if complete is None else _page(complete, "verification_uri_complete"),
                   _seconds(body.get("expires_in"), "expires_in", None),
                   _seconds(body.get("interval"), "interval", DEFAULT_INTERVAL))


def _text(value: object, name: str, longest: int) -> str:
    """A string fit for the terminal (its value is never in the error: it may be a secret)."""
    if not isinstance(value, str) or not value:
        raise AuthError(f"device authorization: the answer has no {name}")
    if len(value) > longest or not value.isprintable():
        raise AuthError(f"device authorization: the answer's {name} is malformed (control "
                        f"characters, or over {longest} characters)")
    return value


def _page(value: object, name: str) -> str:
    """A verification page: https, or http on this machine (a local authorization server)."""
    uri = _text(value, name, 2048)
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or not host or parts.scheme not in ("https", "http") or any(
            char.isspace() for char in uri):  # a space would let it rewrite our line
        raise AuthError(f"device authorization: the answer's {name} is not a URL: "
                        f"{uri[:100]!r}")
    if parts.scheme == "http" and host not in LOOPBACK:
        raise AuthError(f"device authorization: the answer's {name} {uri[:100]} is not https: "
                        f"refusing to send you there")
    return uri


def _seconds(value: object, name: str, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value < 10**9) or (name == "expires_in" and value == 0):
        raise AuthError(f"device authorization: the answer's {name} is not a number of "
                        f"seconds: {str(value)[:40]!r}")
    return float(value)


def _json(answer: requests.Response) -> object:
    try:
        return json.loads(answer.content)
    except (ValueError, RecursionError):
        return None


@traced("oauth device authorization", before=lambda http, endpoint, *rest: {
    "url.full": tracing.bare_url(endpoint)})
def request_code(http: requests.Session, endpoint: str, client: Client,
                 form: dict) -> DeviceCode:
    """POST the device authorization request (with the client's authentication, §3.1)."""
    data, headers = dict(form), {"Accept": "application/json"}
    client.authenticate(endpoint, data, headers)
    try:
        answer = http.post(endpoint, data=data, headers=headers, allow_redirects=False)
    except requests.RequestException as exc:
        raise UpstreamError(f"device authorization: {endpoint} unreachable: "
                            f"{http.describe(exc)}") from exc
    body = _json(answer)
    if answer.status_code >= 500:
        raise UpstreamError(f"device authorization: {endpoint} answered HTTP "
                            f"{answer.status_code}")
    if answer.status_code != 200:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            raise OAuthError("device authorization", body["error"][:100],
                             str(body.get("error_description") or "")[:200])
        raise AuthError(f"device authorization: {endpoint} answered HTTP {answer.status_code}")
    return DeviceCode.parse(body, endpoint)


@traced("oauth device sign-in")
def sign_in_with_code(settings: ClientSettings, http: requests.Session, found: Discovery,
                      client: Client, scope: str | None) -> dict:
    """The whole device sign-in as ``client``; return the token response."""
    endpoint = found.endpoint("device_authorization_endpoint")
    form = {"resource": found.resource}
    if scope:
        form["scope"] = scope
    code = request_code(http, endpoint, client, form)
    if code.expires_in is not None and code.interval >= code.expires_in:
        raise AuthError(f"device authorization: the server asks to wait {code.interval:g} s "
                        f"between polls, but its code expires in {code.expires_in:g} s")
    if code.interval >= settings.oauth_timeout:
        raise AuthError(f"device authorization: the server asks to wait {code.interval:g} s "
                        f"between polls, longer than --oauth-timeout ({settings.oauth_timeout:g}"
                        f" s)")
    opened = bool(code.verification_uri_complete) and not settings.oauth_no_browser \
        and open_browser(code.verification_uri_complete)
    expiry = f" (it expires in {code.expires_in / 60:.0f} min)" if code.expires_in else ""
    sys.stderr.write(f"mcp-proxy: sign in to {settings.url}: "
                     + ("in the browser that opened, or " if opened else "")
                     + f"open {code.verification_uri} and enter the code {code.user_code}"
                     + expiry + (f", or open {code.verification_uri_complete}"
                                 if code.verification_uri_complete and not opened else "")
                     + "\n")
    sys.stderr.flush()
    tokens = poll(http, found, client, code, settings.oauth_timeout)
    logger.info("signed in to %s with a code", settings.url)
    return tokens


def poll(http: requests.Session, found: Discovery, client: Client, code: DeviceCode,
         timeout: float) -> dict:
    """Ask the token endpoint until the user has answered, at the pace the server sets."""
    form = {"grant_type": DEVICE_GRANT, "device_code": code.device_code,
            "resource": found.resource}
    started = time.monotonic()
    expires = started + code.expires_in if code.expires_in else float("inf")
    end = min(started + timeout, expires)
    interval, outages = code.interval, 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            if end == expires:
                raise AuthError(f"the sign-in code expired after {code.expires_in:g} s "
                                f"without an answer: sign in again for a new one")
            raise AuthError(f"sign-in not completed within {timeout:g} s (the code is in the "
                            f"log; raise --oauth-timeout)")
        gevent.sleep(min(max(interval, MIN_INTERVAL), left))
        try:
            return token_request(http, found.endpoint("token_endpoint"), client, form,
                                 "sign-in with a code")
        except OAuthError as exc:
            outages = 0
            if exc.code == "authorization_pending":
                continue
            if exc.code == "slow_down":
                interval += SLOW_DOWN
                logger.info("the authorization server asks to poll more slowly: every %g s",
                            interval)
                continue
            described = "".join(c if c.isprintable() else " " for c in exc.description)
            detail = f" ({described})" if described else ""
            if exc.code == "access_denied":
                raise AuthError(f"sign-in refused by {found.issuer}: access_denied{detail}") \
                    from None
            if exc.code == "expired_token":
                raise AuthError(f"the sign-in code expired before it was entered "
                                f"(expired_token{detail}): sign in again for a new one") \
                    from None
            raise
        except UpstreamError as exc:  # §3.5: back off on a failed poll, but not for ever
            outages += 1
            if outages >= MAX_OUTAGES:
                raise
            interval = max(interval, 1.0) * 2
            logger.warning("%s; polling again in %g s", exc, max(interval, MIN_INTERVAL))
