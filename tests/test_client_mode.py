"""Client mode with plain JSON lines on its stdin/stdout (the SDK-driven tests are elsewhere).

The remote is our own server mode (a real CLI subprocess), or a small scripted HTTP server
in a thread for failures that a real server does not produce on demand (5xx, cut streams).
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
import requests

from conftest import RAW_SERVER, ProxyProcess, rpc


@pytest.mark.parametrize("transport, path", [
    ("sse", "/sse"), ("streamablehttp", "/mcp"), ("auto", "/mcp"), ("auto", "/sse")])
def test_chain_through_our_own_server_mode(raw_proxy, clients, transport, path):
    client = clients("--transport", transport, raw_proxy.base + path)
    assert client.handshake()["result"]["protocolVersion"] == "2025-06-18"
    answer = client.call(rpc("tools/call", "c1", name="echo", arguments={"text": "héllo"}))
    assert answer == {"jsonrpc": "2.0", "id": "c1",
                      "result": {"content": [{"type": "text", "text": "héllo"}]}}
    assert client.call(rpc("no/such", 5))["error"]["code"] == -32601
    assert client.close() == 0


def test_bad_stdin_lines_get_a_parse_error_and_nothing_is_lost(raw_proxy, clients):
    client = clients(raw_proxy.base + "/sse")
    client.send(b"this is not json\n")
    assert client.recv()["error"]["code"] == -32700
    assert client.handshake()["id"] == 0
    assert client.close() == 0
    assert "not json" in client.stderr()


def test_stdin_eof_ends_the_remote_session(raw_proxy, clients):
    client = clients("--transport", "streamablehttp", raw_proxy.base + "/mcp")
    client.handshake()
    assert requests.get(raw_proxy.base + "/status", timeout=5).json()["sessions"] == 1
    started = time.monotonic()
    assert client.close() == 0, client.stderr()
    assert time.monotonic() - started < 5
    assert requests.get(raw_proxy.base + "/status", timeout=5).json()["sessions"] == 0
    raw_proxy.expect("client ended the session")


def test_token_from_header_or_environment(proxy_factory, clients):
    remote = proxy_factory("--auth-token", "t0ken", "--", *RAW_SERVER)
    with_header = clients("-H", "Authorization", "Bearer t0ken", remote.base + "/sse")
    assert "result" in with_header.handshake()
    with_env = clients("--transport", "streamablehttp", remote.base + "/mcp",
                       env={"API_ACCESS_TOKEN": "t0ken"})
    assert "result" in with_env.handshake()
    for client in (with_header, with_env):
        assert client.close() == 0
        assert "t0ken" not in client.stderr()


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamablehttp", "/mcp")])
def test_refused_credentials_fail_at_once(proxy_factory, clients, transport, path):
    remote = proxy_factory("--auth-token", "t0ken", "--", *RAW_SERVER)
    client = clients("--transport", transport, remote.base + path,
                     env={"API_ACCESS_TOKEN": "wrong"})
    assert client.proc.wait(15) == 1
    assert "authentication failed" in client.stderr()
    assert "wrong" not in client.stderr()


def test_unreachable_remote_is_retried_then_reported(clients):
    client = clients("--start-timeout", "1", "-H", "X-Api-Key", "k3y-value",
                     "http://127.0.0.1:9/sse?token=s3cret-query")
    assert client.proc.wait(15) == 1
    assert "cannot reach http://127.0.0.1:9/sse?***" in client.stderr()
    assert "s3cret" not in client.stderr() and "k3y" not in client.stderr()


def test_partial_oauth_is_an_error(clients):
    client = clients("--client-id", "x", "http://127.0.0.1:9/sse")
    assert client.proc.wait(15) == 1
    assert "--client-id needs --client-secret or --client-key" in client.stderr()


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamablehttp", "/mcp")])
def test_recovers_when_the_remote_restarts(clients, transport, path):
    remote = ProxyProcess("--", *RAW_SERVER, "--slow", "0.5").started()
    port = remote.base.rsplit(":", 1)[1]
    client = clients("--transport", transport, remote.base + path)
    try:
        client.handshake()
        assert "result" in client.call(rpc("ping", 1))
        client.send(rpc("ping", 2))  # in flight when the remote goes away
        time.sleep(0.2)
        remote.stop()
        answer = client.recv(timeout=10)
        assert answer["id"] == 2 and "error" in answer
        remote = ProxyProcess("--port", port, "--", *RAW_SERVER).started()
        deadline = time.monotonic() + 20
        while True:
            answer = client.call(rpc("ping", 3), timeout=30)
            if "result" in answer or time.monotonic() > deadline:
                break
        assert answer == {"jsonrpc": "2.0", "id": 3, "result": {}}
        client.wait_stderr("re-initialized")
        assert client.close() == 0
    finally:
        remote.stop()


def test_ten_mib_both_ways(proxy_factory, clients):
    remote = proxy_factory("--max-body-size", "16MiB", "--", *RAW_SERVER)
    for transport, path in (("sse", "/sse"), ("streamablehttp", "/mcp")):
        client = clients("--transport", transport, remote.base + path)
        client.handshake()
        text = "x" * (10 << 20)
        answer = client.call(rpc("tools/call", 1, name="echo", arguments={"text": text}),
                             timeout=60)
        assert answer["result"]["content"][0]["text"] == text
        assert client.close() == 0


class Flaky(http.server.BaseHTTPRequestHandler):
    """A scripted Streamable HTTP remote: 500 once, then a cut stream, then answers."""

    protocol_version = "HTTP/1.1"
    calls: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Mcp-Session-Id", "flaky-1")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(405, b"")

    def do_DELETE(self) -> None:
        self._reply(200, b"")

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method = message.get("method", "")
        self.calls.append(method)
        if "id" not in message:
            return self._reply(202, b"")
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {},
                      "serverInfo": {"name": "flaky", "version": "0"}}
            return self._reply(200, json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                                "result": result}).encode())
        attempt = self.calls.count(method)
        if attempt == 1:
            return self._reply(500, b"internal error", "text/plain")
        if attempt == 2:  # an event stream cut in the middle of an event
            return self._reply(200, b'event: message\ndata: {"jsonrpc": "2.0", "id"',
                               "text/event-stream")
        self._reply(200, json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                     "result": {"ok": attempt}}).encode())


def test_5xx_and_cut_streams_fail_only_that_request(clients):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
    try:
        client = clients("--transport", "streamablehttp", url)
        client.handshake()
        first = client.call(rpc("tools/call", 1, name="x"))
        assert first["id"] == 1 and "500" in first["error"]["message"]
        second = client.call(rpc("tools/call", 2, name="x"))
        assert second["id"] == 2 and "error" in second
        third = client.call(rpc("tools/call", 3, name="x"))
        assert third == {"jsonrpc": "2.0", "id": 3, "result": {"ok": 3}}
        assert client.close() == 0
    finally:
        server.shutdown()


class Maintenance(http.server.BaseHTTPRequestHandler):
    """What a load balancer may answer while the remote is being deployed: a 200 HTML page."""

    def do_GET(self) -> None:
        body = b"<html><body>Back in a minute</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits += 1

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamablehttp", "/mcp")])
def test_a_maintenance_page_during_recovery_is_waited_out(clients, transport, path):
    """A remote that worked and went away is being recovered: a refusal it cannot heal (a page
    that is not MCP) counts as one more failed attempt until --recovery-timeout, not as the
    end of the session (it was: the proxy gave up at the first such page and exited)."""
    remote = ProxyProcess("--", *RAW_SERVER).started()
    port = int(remote.base.rsplit(":", 1)[1])
    client = clients("--transport", transport, remote.base + path)
    page = None
    try:
        client.handshake()
        assert "result" in client.call(rpc("ping", 1))
        remote.stop()
        page = http.server.ThreadingHTTPServer(("127.0.0.1", port), Maintenance)
        page.hits = 0
        threading.Thread(target=page.serve_forever, daemon=True).start()
        client.send(rpc("ping", 3))  # Streamable HTTP may notice the loss only here
        deadline = time.monotonic() + 20
        while page.hits < 2:  # the page was met on two reconnect attempts
            assert time.monotonic() < deadline, client.stderr()
            time.sleep(0.05)
        page.shutdown()
        page.server_close()
        page = None
        remote = ProxyProcess("--port", str(port), "--", *RAW_SERVER).started()
        client.wait_stderr("reconnected and re-initialized", timeout=30)
        client.send(rpc("ping", 2))
        answers = {}
        while 2 not in answers:  # ping 3 was answered too: with an error, or after recovery
            answer = client.recv(15)
            answers[answer["id"]] = answer
        assert answers[2] == {"jsonrpc": "2.0", "id": 2, "result": {}}
        assert client.close() == 0
    finally:
        if page is not None:
            page.shutdown()
            page.server_close()
        remote.stop()
