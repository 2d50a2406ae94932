"""Client mode against scripted remotes: auth schemes, OAuth2, TLS, origins, SSE failures.

A scripted remote is a small threaded http.server on 127.0.0.1 that speaks just enough
Streamable HTTP (or HTTP+SSE) to answer, and checks what it must check.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import queue
import re
import ssl
import subprocess
import threading
from urllib.parse import parse_qs

import pytest

from conftest import ClientProcess, Scripted, rpc

INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "serverInfo": {"name": "scripted", "version": "0"}}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Remote(Scripted):
    """Streamable HTTP: initialize and any request get a JSON answer, if authorized."""

    def do_GET(self) -> None:
        self.reply(self.server.get_status)
        self.server.got_get.set()

    def do_POST(self) -> None:
        body = self.body()
        if self.path == "/token":
            form = parse_qs(body.decode())
            if form.get("client_secret") != ["shh"] or form.get("grant_type") != [
                    "client_credentials"]:
                return self.reply(401, b'{"error":"invalid_client"}')
            self.server.tokens_issued += 1
            token = f"tok-{self.server.tokens_issued}"
            return self.reply(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                               "expires_in": 3600}).encode())
        challenge = self.server.authorize(self)
        if challenge:
            return self.reply(401, b"", "text/plain", WWW_Authenticate=challenge)
        message = json.loads(body)
        if "id" not in message:
            return self.reply(202)
        result = INIT if message.get("method") == "initialize" else {"seen": message["method"]}
        if message.get("method") == "tools/list" and self.server.session is None:
            self.server.got_get.wait(5)  # answer after the GET stream was refused
        headers = {"Mcp_Session_Id": self.server.session} if self.server.session else {}
        self.reply(200, json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                    "result": result}).encode(), **headers)


def serve(authorize=lambda handler: None, tls: tuple | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Remote)
    server.authorize = authorize
    server.tokens_issued = 0
    server.get_status, server.session, server.got_get = 405, "s-1", threading.Event()
    scheme = "http"
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def remote_factory():
    servers = []

    def start(**kwargs):
        server, base = serve(**kwargs)
        servers.append(server)
        return server, base

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def exchange(client: ClientProcess) -> dict:
    client.call(rpc("initialize", 0, **INIT))
    return client.call(rpc("tools/list", 1))


def accepting(authorization: str, challenge: str = "Bearer"):
    """An ``authorize`` for the remote that lets in exactly this Authorization header and
    answers anything else with ``challenge``."""
    return lambda h: None if h.headers.get("Authorization") == authorization else challenge


def test_stateless_remote_refusing_the_get_stream(remote_factory, clients):
    """No session id and 404 on the GET stream: that means "no GET stream", not a lost
    session (which failed the pending tools/list)."""
    server, base = remote_factory()
    server.get_status, server.session = 404, None
    client = clients("--transport", "streamablehttp", base + "/mcp")
    client.handshake()
    assert client.call(rpc("tools/list", 1))["result"] == {"seen": "tools/list"}
    assert server.got_get.is_set()
    assert client.close() == 0
    assert "lost the remote session" not in client.stderr()


def test_basic_auth(remote_factory, clients):
    expected = "Basic " + base64.b64encode(b"ann:pw").decode()
    _, base = remote_factory(authorize=accepting(expected, 'Basic realm="r"'))
    client = clients("--transport", "streamablehttp", "--username", "ann", "--password", "pw",
                     base + "/mcp")
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0
    assert "pw" not in client.stderr()


def test_digest_auth(remote_factory, clients):
    realm, nonce = "mcp", "n0nce"

    def authorize(handler):
        sent = handler.headers.get("Authorization", "")
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', sent))
        if sent.startswith("Digest ") and fields.get("username") == "ann":
            ha1 = md5(f"ann:{realm}:pw")
            ha2 = md5(f"{handler.command}:{fields['uri']}")
            good = md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
            if fields.get("response") == good:
                return None
        return f'Digest realm="{realm}", nonce="{nonce}", qop="auth"'

    _, base = remote_factory(authorize=authorize)
    client = clients("--transport", "streamablehttp", "--username", "ann", "--password", "pw",
                     "--digest", base + "/mcp")
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0


def oauth_client(clients, base: str, secret: str = "shh"):
    """A client-mode proxy to ``base``/mcp that gets its bearer token from ``base``/token."""
    return clients("--transport", "streamablehttp", "--client-id", "me", "--client-secret",
                   secret, "--token-url", base + "/token", base + "/mcp")


def test_oauth2_client_credentials(remote_factory, clients):
    server, base = remote_factory(authorize=accepting("Bearer tok-1"))
    client = oauth_client(clients, base)
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.call(rpc("ping", 2))["result"] == {"seen": "ping"}
    assert server.tokens_issued == 1  # cached, not fetched per request
    assert client.close() == 0
    assert "shh" not in client.stderr() and "tok-1" not in client.stderr()


def test_oauth2_token_refused_early_is_refreshed(remote_factory, clients):
    server, base = remote_factory(authorize=accepting("Bearer tok-2"))
    client = oauth_client(clients, base)
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert server.tokens_issued == 2
    assert client.close() == 0


def test_oauth2_wrong_secret_is_an_auth_error(remote_factory, clients):
    _, base = remote_factory()
    client = oauth_client(clients, base, secret="nope")
    assert client.proc.wait(15) == 1
    assert "authentication failed: token endpoint refused the client credentials" \
        in client.stderr()
    assert "nope" not in client.stderr()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return str(cert), str(key)


def test_tls_verification(remote_factory, clients, certificate):
    _, base = remote_factory(tls=certificate)
    url = base + "/mcp"
    refused = clients("--transport", "streamablehttp", url)
    assert refused.proc.wait(15) == 1
    assert "TLS verification failed" in refused.stderr()
    for flags in (["--no-verify-ssl"], ["--verify-ssl", "false"],
                  ["--verify-ssl", certificate[0]]):
        client = clients("--transport", "streamablehttp", *flags, url)
        assert exchange(client)["result"] == {"seen": "tools/list"}
        assert client.close() == 0


def test_verify_ssl_bundle_must_exist(clients):
    client = clients("--verify-ssl", "/no/such/bundle.pem", "https://127.0.0.1:9/sse")
    assert client.proc.wait(15) == 1
    assert "no CA bundle" in client.stderr()


class SseRemote(http.server.BaseHTTPRequestHandler):
    """HTTP+SSE: the stream says ``endpoint``; POSTs answer 500 once, then 202 + an event.
    ``server.fields`` is written before each event's own lines (e.g. a ``retry:``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        fields = self.server.fields.encode()
        self.wfile.write(fields + f"event: endpoint\ndata: {self.server.endpoint}\n\n".encode())
        self.wfile.flush()
        while not self.server.stopping.is_set():
            try:
                data = self.server.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self.wfile.write(fields + b"event: message\ndata: " + data + b"\n\n")
            self.wfile.flush()

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts += 1
        if message.get("method") == "tools/call" and not self.server.failed:
            self.server.failed = True
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(202)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"Accepted")
        if "id" in message:
            result = INIT if message["method"] == "initialize" else {"ok": message["method"]}
            self.server.outbox.put(json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                               "result": result}).encode())


@pytest.fixture
def sse_remote():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SseRemote)
    server.daemon_threads = True
    server.outbox, server.stopping = queue.Queue(), threading.Event()
    server.posts, server.failed, server.endpoint = 0, False, "/messages/?session_id=abc"
    server.fields = ""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.stopping.set()
    server.shutdown()
    server.server_close()


def test_sse_remote_5xx_fails_only_that_request(sse_remote, clients):
    server, base = sse_remote
    client = clients("--transport", "sse", base + "/sse")
    assert client.call(rpc("initialize", 0, **INIT))["result"] == INIT
    failed = client.call(rpc("tools/call", 1, name="x"))
    assert failed["id"] == 1 and "500" in failed["error"]["message"]
    assert client.call(rpc("tools/call", 2, name="x"))["result"] == {"ok": "tools/call"}
    assert client.close() == 0


def test_endpoint_on_another_origin_is_refused(sse_remote, clients):
    server, base = sse_remote
    server.endpoint = "http://evil.example/messages/?session_id=abc"
    client = clients("--transport", "sse", "--start-timeout", "1",
                     base + "/sse")
    assert client.proc.wait(15) == 1
    assert "not on the origin" in client.stderr()
    assert server.posts == 0


def test_sse_retry_field_that_is_not_a_number_is_ignored(sse_remote, clients):
    server, base = sse_remote
    server.fields = "id: 7\nretry: soon\n"
    client = clients("--transport", "sse", base + "/sse")
    assert client.call(rpc("initialize", 0, **INIT))["result"] == INIT
    assert client.call(rpc("ping", 1))["result"] == {"ok": "ping"}
    assert client.close() == 0
    assert "crashed" not in client.stderr()
