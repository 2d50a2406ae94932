"""A scripted OAuth authorization server and a protected MCP server, in one.

``start(tls=None, **switches)`` runs it on 127.0.0.1 in a thread of the test process and returns the
server; its attributes count what happened (``hits``, ``tokens``, ``codes``...). The MCP
endpoints are ``/mcp`` (Streamable HTTP) and ``/sse`` (HTTP+SSE); ``/authorize`` approves at
once (a 302 to the redirect URI), so a scripted browser that follows redirects completes the
sign-in. Switches (see ``DEFAULTS``)
choose the discovery variant, registration, token auth methods, scopes, step-up, expiry.
``python oauth_server.py`` serves it with the defaults until interrupted.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import ssl
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from oauth_device import DEVICE_GRANT, DeviceGrant
from oauth_jag import JWT_BEARER, JwtBearerGrant
from oauth_resource import ProtectedMcp

DEFAULTS = {
    "prm": "header",  # header | path | root | none (a 2025-03-26 server)
    "as_metadata": "oauth",  # oauth | oidc | none (none: the /authorize /token /register defaults)
    "issuer_path": "",  # e.g. "/tenant1": an issuer with a path
    "prm_resource": None,  # what the metadata says the resource is (default: the /mcp URL)
    "scopes_supported": ["mcp"],  # in the protected resource metadata
    "challenge_scope": None,  # scope= in the 401 challenge
    "auth_methods": ["none", "client_secret_basic", "client_secret_post"],
    "pkce_methods": ["S256"],
    "registration": True,
    "cimd": False,
    "iss": False,  # add iss to the authorization response (a string: that wrong value)
    "expires_in": 3600,
    "refresh": True,  # issue refresh tokens (rotated; a replayed one is invalid_grant)
    "revoke_refresh": False,  # every refresh token was revoked: a refresh is invalid_grant,
    # and every access token issued before is refused (401)
    "refuse_fresh": False,  # the MCP server refuses (401) every token issued from now on
    "admin_scope": "admin",  # what the tool "admin" needs (403 insufficient_scope otherwise)
    "stepup_scope_in_challenge": True,
    "grantable": ["mcp", "admin", "offline_access"],  # scopes the AS ever grants
    "token_down": False,  # the token endpoint answers 503
    "deny": False,  # the user refuses: the authorization response is error=access_denied
    "accept": True,  # False: the MCP server refuses every token (a broken deployment)
    "audience": None,  # what a client assertion's aud must be (default: the issuer)
    "clients": {},  # pre-registered: {client_id: {"secret": ..., "method": ...}}
    "client_keys": {},  # client credentials with a key: {client_id: public PEM}
    "device": False,  # offer the device authorization grant (oauth_device.py)
    "device_interval": 0,  # the interval /device names (None: none, the client's 5 s)
    "device_expires_in": 600,
    "device_slow_down": 0,  # slow_down answers to the first polls
    "device_pending": 2,  # then authorization_pending answers (unless /verify was visited)
    "device_outcome": "approve",  # then: approve | deny | expire
    "device_answer": None,  # replaces the /device answer (a dict or raw bytes)
    "idp_key": None,  # the identity provider's public PEM: accept its ID-JAGs (oauth_jag.py)
    "jag_refresh": False,  # a refresh token with the access token an ID-JAG brings
}


class Handler(ProtectedMcp, DeviceGrant, JwtBearerGrant, http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:  # who sent what: a forward proxy's outgoing address tells its requests
            self.s.peers.append((self.client_address[0], self.command, self.path.split("?")[0]))
        return parsed

    @property
    def s(self):
        return self.server

    def reply(self, status: int, body=b"", kind: str = "application/json", **headers) -> None:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        fields = {"Content-Type": kind, "Content-Length": str(len(data)),
                  **{name.replace("_", "-"): value for name, value in headers.items()}}
        self.send_response(status)
        for name, value in fields.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def form(self) -> dict:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or "{}")
        return {k: v[0] for k, v in parse_qs(raw).items()}

    # --- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        self.s.hits[f"GET {path}"] += 1
        sw, ipath = self.s.sw, self.s.sw["issuer_path"]
        prm_paths = {"header": "/meta/prm", "path": "/.well-known/oauth-protected-resource/mcp",
                     "root": "/.well-known/oauth-protected-resource"}
        if path == prm_paths.get(sw["prm"]):
            return self.reply(200, {"resource": sw["prm_resource"] or self.s.base + "/mcp",
                                    "authorization_servers": [self.s.issuer],
                                    "scopes_supported": sw["scopes_supported"]})
        wanted = {"oauth": f"/.well-known/oauth-authorization-server{ipath}",
                  "oidc": f"/.well-known/openid-configuration{ipath}"}.get(sw["as_metadata"])
        if path == wanted:
            return self.reply(200, self.s.metadata())
        if path == f"{ipath}/authorize":
            return self.authorize({k: v[0] for k, v in query.items()})
        if path == f"{ipath}/verify" and sw["device"]:
            return self.verify({k: v[0] for k, v in query.items()})
        if path == "/mcp":
            if self.bearer() is None:
                return self.challenge()
            return self.reply(405)
        if path == "/sse":
            return self.sse()
        self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.s.hits[f"POST {path}"] += 1
        ipath = self.s.sw["issuer_path"]
        if path == f"{ipath}/token":
            return self.token(self.form())
        if path == f"{ipath}/register" and self.s.sw["registration"]:
            return self.register(self.form())
        if path == f"{ipath}/device" and self.s.sw["device"]:
            return self.device(self.form())
        if path == "/mcp":
            return self.mcp()
        if path == "/messages/":
            return self.sse_post()
        self.reply(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        self.reply(200)

    # --- authorization server ----------------------------------------------------------------

    def authorize(self, q: dict) -> None:
        client = self.s.registered.get(q.get("client_id")) or self.s.sw["clients"].get(
            q.get("client_id"))
        if self.s.sw["cimd"] and q.get("client_id", "").startswith("https://"):
            client = {"redirect_uris": [q.get("redirect_uri")]}
        if client is None:
            return self.reply(400, {"error": "invalid_client"})
        uris = client.get("redirect_uris")
        if q.get("response_type") != "code" or (uris and q.get("redirect_uri") not in uris) \
                or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return self.reply(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        granted = [s for s in (q.get("scope") or "").split() if s in self.s.sw["grantable"]]
        self.s.codes[code] = dict(q, scope=" ".join(granted))
        self.s.authorize_params.append(q)
        answer = {"code": code, "state": q.get("state", "")}
        if self.s.sw["deny"]:
            answer = {"error": "access_denied", "error_description": "the user said no",
                      "state": q.get("state", "")}
        if self.s.sw["iss"]:
            answer["iss"] = self.s.sw["iss"] if isinstance(self.s.sw["iss"], str) \
                else self.s.issuer
        self.reply(302, b"", "text/plain", Location=q["redirect_uri"] + "?" + urlencode(answer))

    def register(self, body: dict) -> None:
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        client_id = f"dcr-{len(self.s.registered) + 1}"
        record = dict(body, client_id=client_id, token_endpoint_auth_method=method)
        if method != "none":
            record["client_secret"] = secrets.token_urlsafe(16)
        self.s.registered[client_id] = record
        self.s.registrations.append(body)
        self.reply(201, record)

    def client_auth(self, form: dict) -> str | None:
        """The authenticated client id, checked by its one registered method."""
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            pair = base64.b64decode(basic[6:]).decode()
            client_id, secret = (unquote_plus(p) for p in pair.split(":", 1))
            given, method = secret, "client_secret_basic"
            if "client_secret" in form:
                return None  # two methods at once
        elif "client_assertion" in form:
            import jwt

            client_id = form.get("client_id")
            key = self.s.sw["client_keys"].get(client_id)
            try:
                # the issuer identifier alone, as RFC 7523bis requires (not the endpoint)
                claims = jwt.decode(form["client_assertion"], key, algorithms=["RS256", "ES256"],
                                    audience=self.s.audience)
            except Exception:
                return None
            if claims.get("aud") != self.s.audience:  # one string, not a list holding it
                return None
            return client_id if claims.get("iss") == client_id == claims.get("sub") else None
        else:
            client_id, given = form.get("client_id"), form.get("client_secret")
            method = "client_secret_post" if given is not None else "none"
        client = self.s.registered.get(client_id) or self.s.sw["clients"].get(client_id)
        if self.s.sw["cimd"] and (client_id or "").startswith("https://"):
            client = {"token_endpoint_auth_method": "none"}
        if client is None or client.get("revoked"):
            return None
        expected = client.get("token_endpoint_auth_method") or client.get("method")
        if method != expected or (method != "none" and given != (
                client.get("client_secret") or client.get("secret"))):
            return None
        return client_id

    def token(self, form: dict) -> None:
        grant = form.get("grant_type")
        if self.s.sw["token_down"]:
            return self.reply(503, {"error": "temporarily_unavailable"})
        self.s.token_requests.append({k: v for k, v in form.items()})
        client_id = self.client_auth(form)
        if client_id is None:
            return self.reply(401, {"error": "invalid_client"})
        if grant == "authorization_code":
            record = self.s.codes.pop(form.get("code"), None)
            if record is None or record["client_id"] != client_id \
                    or record["redirect_uri"] != form.get("redirect_uri") \
                    or record.get("resource") != form.get("resource"):
                return self.reply(400, {"error": "invalid_grant"})
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != \
                    record["code_challenge"]:
                return self.reply(400, {"error": "invalid_grant", "error_description": "pkce"})
            return self.issue(client_id, record["scope"], form.get("resource"))
        if grant == "refresh_token":
            record = self.s.refresh.pop(form.get("refresh_token"), None)
            if self.s.sw["revoke_refresh"]:
                self.s.refused_refreshes += 1
                return self.reply(400, {"error": "invalid_grant",
                                        "error_description": "the refresh token was revoked"})
            if record is None or record["client_id"] != client_id:
                return self.reply(400, {"error": "invalid_grant"})
            self.s.refreshes += 1
            return self.issue(client_id, record["scope"], record["resource"])
        if grant == DEVICE_GRANT:
            return self.device_token(form, client_id)
        if grant == JWT_BEARER and self.s.sw["idp_key"]:
            return self.jwt_bearer(form, client_id)
        if grant == "client_credentials":
            return self.issue(client_id, form.get("scope", ""), form.get("resource"),
                              refresh=False)
        self.reply(400, {"error": "unsupported_grant_type"})

    def issue(self, client_id: str, scope: str, resource: str | None, refresh=True) -> None:
        token = "at-" + secrets.token_urlsafe(16)
        lifetime = self.s.sw["expires_in"]
        self.s.tokens[token] = {"scope": scope, "resource": resource,
                                "expires": time.time() + lifetime, "client_id": client_id,
                                "refused": self.s.sw["refuse_fresh"]}
        answer = {"access_token": token, "token_type": "bearer", "expires_in": lifetime,
                  "scope": scope}
        if refresh and self.s.sw["refresh"]:
            answer["refresh_token"] = "rt-" + secrets.token_urlsafe(16)
            self.s.refresh[answer["refresh_token"]] = {"client_id": client_id, "scope": scope,
                                                       "resource": resource}
        self.reply(200, answer, Cache_Control="no-store")


class OAuthServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: tuple | None = None, **switches) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sw = {**DEFAULTS, **switches}
        scheme = "http"
        if tls:  # (certificate, key): served over TLS
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            scheme = "https"
        self.base = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        self.peers: list[tuple[str, str, str]] = []  # (client address, method, path)
        self.issuer = self.base + self.sw["issuer_path"]
        self.audience = self.sw["audience"] or self.issuer
        self.hits: Counter = Counter()
        self.registered, self.codes, self.tokens, self.refresh = {}, {}, {}, {}
        self.registrations, self.token_requests, self.authorize_params = [], [], []
        self.calls: list[str] = []
        self.sse_sessions: dict = {}
        self.closed = threading.Event()
        self.refreshes = 0
        self.refused_refreshes = 0  # refresh requests refused by revoke_refresh
        self.device_codes: dict = {}
        self.device_requests: list[dict] = []
        self.device_polls: list[float] = []  # when the device grant was polled (monotonic)
        self.assertions: list[str] = []  # the jwt-bearer grants' assertions
        self.jtis: set[str] = set()

    def server_close(self) -> None:
        self.closed.set()  # ends the open event streams
        super().server_close()

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up is no news here

    def metadata(self) -> dict:
        ip = self.base + self.sw["issuer_path"]
        found = {"issuer": self.issuer, "authorization_endpoint": ip + "/authorize",
                 "token_endpoint": ip + "/token", "response_types_supported": ["code"],
                 "scopes_supported": self.sw["grantable"],
                 "token_endpoint_auth_methods_supported": self.sw["auth_methods"],
                 "code_challenge_methods_supported": self.sw["pkce_methods"],
                 "client_id_metadata_document_supported": self.sw["cimd"],
                 "authorization_response_iss_parameter_supported": self.sw["iss"]}
        if self.sw["registration"]:
            found["registration_endpoint"] = ip + "/register"
        if self.sw["device"]:
            found["device_authorization_endpoint"] = ip + "/device"
        return found

    def revoke_refresh(self) -> None:
        """The user revoked the grant: refreshes fail, and the tokens held are refused."""
        self.sw["revoke_refresh"] = True
        self.tokens.clear()

    def revoke_all(self) -> None:
        """Forget every token and refresh token (the clients stay registered)."""
        self.tokens.clear()
        self.refresh.clear()


def start(**switches) -> OAuthServer:
    server = OAuthServer(**switches)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    served = OAuthServer()
    print(f"MCP endpoint {served.base}/mcp", flush=True)
    served.serve_forever()
