"""OAuth wire details: the Bearer challenge, client authentication and token requests.

Token values and secrets never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote_plus

import requests

from mcp_proxy.errors import AuthError, ConfigError, OAuthError, UpstreamError
from mcp_proxy.upstream.oauth.traced_step import token_attributes, traced

logger = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_SCHEME = re.compile(r'\s*,?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?=\s|$|,)')


def bearer_challenge(response: requests.Response) -> dict[str, str]:
    """The parameters of the ``Bearer`` challenge in WWW-Authenticate (names lower-cased)."""
    headers = response.raw.headers.getlist("WWW-Authenticate") \
        if hasattr(getattr(response, "raw", None), "headers") else []
    if not headers and response.headers.get("WWW-Authenticate"):
        headers = [response.headers["WWW-Authenticate"]]
    for header in headers:
        found = parse_challenges(header).get("bearer")
        if found is not None:
            return found
    return {}


def parse_challenges(header: str) -> dict[str, dict[str, str]]:
    """RFC 9110 challenges: ``{scheme: {param: value}}``, quoted strings unescaped."""
    challenges: dict[str, dict[str, str]] = {}
    pos, current = 0, None
    while pos < len(header):
        param = _PARAM.match(header, pos)
        if param and current is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            current[param.group(1).lower()] = value
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if not scheme:
            break
        current = challenges.setdefault(scheme.group(1).lower(), {})
        pos = scheme.end()
        # token68 (e.g. a Negotiate blob) is not ours: skip it
        token68 = re.match(r"\s*[A-Za-z0-9._~+/-]+=*\s*(?=,|$)", header[pos:])
        if token68 and "=" not in header[pos:pos + token68.end()].rstrip("="):
            pos += token68.end()
    return challenges


def resend(response: requests.Response, token: str, **kwargs) -> requests.Response:
    """Send a refused request again, once, with a new bearer token (from a response hook)."""
    response.content  # noqa: B018  (drain, so the connection can be reused)
    response.close()
    retry = response.request.copy()
    retry._auth_retried = True
    retry.headers["Authorization"] = f"Bearer {token}"
    again = response.connection.send(retry, **kwargs)
    again.history.append(response)
    again.request = retry
    return again


@dataclass
class Client:
    """How we authenticate to the token endpoint."""

    client_id: str
    method: str = "none"  # none | client_secret_basic | client_secret_post | private_key_jwt
    secret: str | None = None
    key_pem: bytes | None = None
    key_alg: str | None = None
    # private_key_jwt's ``aud``: the authorization server's issuer identifier, which servers
    # following RFC 7523bis require (None, with --token-url and no metadata: the endpoint)
    audience: str | None = None

    def authenticate(self, token_url: str, data: dict, headers: dict) -> None:
        if self.method == "client_secret_basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self.secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            return
        data["client_id"] = self.client_id
        if self.method == "client_secret_post":
            data["client_secret"] = self.secret or ""
        elif self.method == "private_key_jwt":
            data["client_assertion_type"] = ASSERTION_TYPE
            data["client_assertion"] = self.assertion(self.audience or token_url)

    def assertion(self, audience: str) -> str:
        """An RFC 7523 client assertion signed with our key."""
        import jwt  # PyJWT: only this path needs it (and cryptography)

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300}
        return jwt.encode(claims, self.key_pem, algorithm=self.key_alg)


# The project is installed from its clone (mcp-proxy on PyPI is another project), so the
# hint names the extra as each installer takes it there.
KEYS_HINT = ("--client-key needs PyJWT and cryptography, the 'keys' extra: in the clone, "
             "uv tool install --reinstall '.[keys]' (or pipx install --force '.[keys]', "
             "or pip install '.[keys]')")


def load_key(path: str, alg: str | None) -> tuple[bytes, str]:
    """Read a PEM private key; the algorithm defaults from the key type."""
    try:
        import jwt  # noqa: F401 (the assertion's; missing, it would fail only at the first call)
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as exc:
        raise ConfigError(KEYS_HINT) from exc
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
        key = load_pem_private_key(pem, password=None)
    except OSError as exc:
        raise ConfigError(f"--client-key: cannot read {path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--client-key: {path} is not an unencrypted PEM private key") \
            from exc
    if alg is None:
        if isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            alg = {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            alg = "EdDSA"
        if alg is None:
            raise ConfigError("--client-key: cannot tell the algorithm; give --client-key-alg")
    return pem, alg


def printable(text: object, longest: int) -> str:
    """A server's text fit for one log line: control characters blanked, cut."""
    return "".join(c if c.isprintable() else " " for c in str(text)[:longest])


@traced("oauth token", before=token_attributes)
def token_request(http: requests.Session, token_url: str, client: Client, form: dict,
                  what: str, bearer: bool = True) -> dict:
    """POST a token request; return the token response (``bearer``: one with a bearer
    access token, else any JSON object), or raise OAuthError / UpstreamError."""
    data, headers = dict(form), {"Accept": "application/json"}
    client.authenticate(token_url, data, headers)
    try:
        answer = http.post(token_url, data=data, headers=headers)
    except requests.RequestException as exc:
        raise UpstreamError(f"{what}: token endpoint unreachable: {http.describe(exc)}") from exc
    try:
        body = answer.json()
    except (ValueError, RecursionError):
        body = None
    if answer.status_code == 200 and isinstance(body, dict) and (not bearer or (
            isinstance(body.get("access_token"), str)
            and str(body.get("token_type", "bearer")).lower() == "bearer")):
        return body
    if answer.status_code >= 500:
        raise UpstreamError(f"{what}: token endpoint answered HTTP {answer.status_code}")
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        raise OAuthError(what, printable(body["error"], 100),
                         printable(body.get("error_description") or "", 200))
    if answer.status_code in (400, 401, 403):
        raise OAuthError(what, f"HTTP {answer.status_code}")
    if answer.status_code == 200:
        raise AuthError(f"{what}: the token endpoint answer has no bearer access_token"
                        if bearer else f"{what}: the token endpoint answered no JSON object")
    raise UpstreamError(f"{what}: token endpoint answered HTTP {answer.status_code}")


def choose_method(supported: list | None, client: Client) -> str:
    """The token endpoint auth method for a client with a secret, a key or neither."""
    if client.key_pem is not None:
        return "private_key_jwt"
    if not client.secret:
        return "none"
    if supported is None:  # RFC 8414: the default is client_secret_basic
        return "client_secret_basic"
    for method in ("client_secret_basic", "client_secret_post"):
        if method in supported:
            return method
    return "client_secret_basic"
