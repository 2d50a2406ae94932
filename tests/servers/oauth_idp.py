"""A scripted company identity provider for enterprise sign-in (SEP-990), on 127.0.0.1.

``start(**switches)`` runs it in a thread of the test process. ``id_token()`` mints an ID
token for the user (signed with the provider's key, ``aud`` our client there). ``POST
/token`` is the RFC 8693 token exchange: it checks every parameter (client authentication,
grant and token types, the ID token's signature, issuer, audience and expiry, the
``(audience, resource)`` pair its policy allows) and answers an ID-JAG signed with the same
key. The exchanges it saw are in ``exchanges``, the ID-JAGs it issued in ``issued``.
Switches (see ``DEFAULTS``) make it refuse, misstate the audience or answer anything.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
CLIENT, SECRET = "proxy-at-idp", "idp-secret-7"

DEFAULTS = {
    "client_method": "client_secret_post",  # or client_secret_basic: the one it accepts
    "pairs": {},  # {audience: resource} its policy allows (set by the test: the AS's issuer)
    "client_at_as": "svc",  # the ID-JAG's client_id claim (our client at the AS)
    "jag_audience": None,  # put this aud in the ID-JAG instead of the one asked (misconfigured)
    "answer": None,  # replaces the 200 answer (a dict, or raw bytes); with "status"
    "status": 200,
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, error: str, description: str, status: int = 400) -> None:
        self.reply(status, {"error": error, "error_description": description})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        idp, sw = self.server, self.server.sw
        idp.exchanges.append({**form, "authorization": self.headers.get("Authorization")})
        if self.path != "/oauth2/token":
            return self.refuse("invalid_request", "no such endpoint", 404)
        if not self.client_ok(form):
            return self.refuse("invalid_client", "client authentication failed", 401)
        if sw["answer"] is not None:
            return self.reply(sw["status"], sw["answer"])
        if form.get("grant_type") != TOKEN_EXCHANGE:
            return self.refuse("unsupported_grant_type", form.get("grant_type", ""))
        if form.get("requested_token_type") != ID_JAG \
                or form.get("subject_token_type") != ID_TOKEN \
                or "actor_token" in form:
            return self.refuse("invalid_request", "token types")
        try:
            subject = jwt.decode(form.get("subject_token", ""), idp.public_pem,
                                 algorithms=["ES256"], audience=CLIENT, issuer=idp.issuer)
        except jwt.ExpiredSignatureError:
            return self.refuse("invalid_grant", "the subject token has expired")
        except jwt.PyJWTError:
            return self.refuse("invalid_grant", "the subject token is not ours")
        audience, resource = form.get("audience"), form.get("resource")
        if sw["pairs"].get(audience) != resource:
            return self.refuse("invalid_grant", "Audience validation failed")
        now = int(time.time())
        claims = {"iss": idp.issuer, "sub": subject["sub"], "aud": sw["jag_audience"] or
                  audience, "client_id": sw["client_at_as"], "jti": secrets.token_hex(8),
                  "iat": now, "exp": now + 300, "resource": resource}
        if form.get("scope"):
            claims["scope"] = form["scope"]
        jag = jwt.encode(claims, idp.private_pem, algorithm="ES256",
                         headers={"typ": "oauth-id-jag+jwt"})
        idp.issued.append(jag)
        answer = {"issued_token_type": ID_JAG, "access_token": jag, "token_type": "N_A",
                  "expires_in": 300}
        if form.get("scope"):
            answer["scope"] = form["scope"]
        self.reply(200, answer)

    def client_ok(self, form: dict) -> bool:
        method = self.server.sw["client_method"]
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            pair = base64.b64decode(basic[6:]).decode()
            given = tuple(unquote_plus(part) for part in pair.split(":", 1))
            return method == "client_secret_basic" and "client_secret" not in form \
                and given == (CLIENT, SECRET)
        return method == "client_secret_post" and (form.get("client_id"),
                                                    form.get("client_secret")) == (CLIENT, SECRET)


class IdentityProvider(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, **switches) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sw = {**DEFAULTS, **switches}
        self.sw["pairs"] = dict(self.sw["pairs"])
        self.issuer = f"http://127.0.0.1:{self.server_address[1]}"
        self.token_url = self.issuer + "/oauth2/token"
        key = ec.generate_private_key(ec.SECP256R1())
        self.private_pem = key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.exchanges: list[dict] = []
        self.issued: list[str] = []

    def handle_error(self, request, client_address) -> None:
        pass

    def id_token(self, sub: str = "alice", lifetime: int = 3600) -> str:
        now = int(time.time())
        return jwt.encode({"iss": self.issuer, "sub": sub, "aud": CLIENT, "iat": now,
                           "exp": now + lifetime, "nonce": secrets.token_hex(4)},
                          self.private_pem, algorithm="ES256")


def start(**switches) -> IdentityProvider:
    server = IdentityProvider(**switches)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
