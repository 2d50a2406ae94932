"""What README.md promises and no other test checked, each against the real CLI.

Server mode: 404 and 405 with an exact ``Allow``, the ``sessionId`` alias, ``--stateless``,
the Host rules of a wildcard bind and ``--allow-host``, the header count limit, the GET
``/mcp`` backlog, an oversize server answer, a config file beside ``--named-server``. Client
mode: a remote's 403, and giving up after ``--recovery-timeout``.
"""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import threading

import pytest
import requests

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, ProxyProcess, SseReader, open_sse, rpc

# --- routing: 404, 405 and Allow ------------------------------------------------------------

MCP_METHODS = "DELETE, GET, OPTIONS, POST"


@pytest.fixture(scope="module")
def named_proxy():
    """A default server and one named ``one``, shared by the routing tests."""
    proxy = ProxyProcess("--named-server", "one", shlex.join(RAW_SERVER), "--",
                         *RAW_SERVER).started()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("method, path, allow", [
    ("HEAD", "/sse", "GET, OPTIONS"), ("DELETE", "/sse", "GET, OPTIONS"),
    ("HEAD", "/mcp", MCP_METHODS), ("PUT", "/mcp", MCP_METHODS), ("PATCH", "/mcp/", MCP_METHODS),
    ("GET", "/messages/", "OPTIONS, POST"), ("HEAD", "/messages/", "OPTIONS, POST"),
    ("HEAD", "/status", "GET, OPTIONS"), ("POST", "/status", "GET, OPTIONS"),
    ("HEAD", "/servers/one/mcp", MCP_METHODS), ("PUT", "/servers/one/sse", "GET, OPTIONS"),
])
def test_a_wrong_method_is_405_naming_exactly_what_the_path_takes(named_proxy, method, path,
                                                                   allow):
    base = named_proxy.base
    answer = requests.request(method, base + path, timeout=10)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == allow
    for listed in allow.split(", "):  # every method named is really taken
        with requests.request(listed, base + path, stream=True, timeout=10,
                              headers={"Origin": "http://localhost"}) as taken:
            assert taken.status_code != 405, (listed, path)


@pytest.mark.parametrize("method, path", [
    ("GET", "/nope"), ("POST", "/servers/two/mcp"), ("HEAD", "/nope"), ("OPTIONS", "/nope"),
    ("GET", "/servers/one/status"), ("GET", "/"),
])
def test_a_path_we_do_not_serve_is_404(named_proxy, method, path):
    answer = requests.request(method, named_proxy.base + path, timeout=10)
    assert answer.status_code == 404
    assert "Allow" not in answer.headers
    if method != "HEAD":
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.text == "Not Found"


def test_preflight_names_the_methods_of_its_path(named_proxy):
    for path, methods in (("/mcp", MCP_METHODS), ("/sse", "GET, OPTIONS"),
                          ("/servers/one/messages/", "OPTIONS, POST")):
        answer = requests.options(named_proxy.base + path, timeout=10, headers={
            "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
        assert answer.status_code == 204
        assert answer.headers["Access-Control-Allow-Methods"] == methods


def test_routing_answers_come_before_the_token_check(proxy_factory):
    proxy = proxy_factory("--auth-token", "t0ken", "--", *RAW_SERVER)
    assert requests.get(proxy.base + "/nope", timeout=10).status_code == 404
    assert requests.put(proxy.base + "/mcp", timeout=10).status_code == 405
    assert requests.get(proxy.base + "/sse", timeout=10).status_code == 401


# --- HTTP+SSE, flags ------------------------------------------------------------------------

def test_session_id_alias_on_messages(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    session_id = endpoint.rsplit("session_id=", 1)[1]
    posted = requests.post(f"{raw_proxy.base}/messages/?sessionId={session_id}",
                           json=rpc("ping", 9), timeout=10)
    assert (posted.status_code, posted.text) == (202, "Accepted")
    assert reader.next_message() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    reader.close()


def test_stateless_is_refused_with_a_clear_error():
    proxy = ProxyProcess("--stateless", "--", *RAW_SERVER)
    try:
        assert proxy.proc.wait(20) == 1
    finally:
        proxy.stop()
    proxy.expect("--stateless is not supported yet")
    assert "Traceback" not in proxy.stderr()


# --- Host rules and header limits -------------------------------------------------------------

def loopback(proxy: ProxyProcess) -> str:
    """The proxy's base URL on 127.0.0.1, whatever address it is bound to."""
    return "http://127.0.0.1:" + proxy.base.rsplit(":", 1)[1]


def host_status(base: str, host: str) -> int:
    return requests.get(base + "/status", headers={"Host": host}, timeout=10).status_code


def test_bound_to_all_interfaces_any_host_is_accepted(proxy_factory):
    proxy = proxy_factory("--host", "0.0.0.0", "--", *RAW_SERVER)
    base = loopback(proxy)  # traffic stays on loopback: only the Host header is foreign
    for host in ("evil.example", "mcp.example.com:8443", "10.1.2.3"):
        assert host_status(base, host) == 200, host


def test_allow_host(proxy_factory):
    named = proxy_factory("--allow-host", "mcp.example.com", "--", *RAW_SERVER)
    assert host_status(named.base, "mcp.example.com") == 200
    assert host_status(named.base, "mcp.example.com:8443") == 200
    assert host_status(named.base, "evil.example") == 421
    anything = proxy_factory("--allow-host", "*", "--", *RAW_SERVER)
    assert host_status(anything.base, "evil.example") == 200


def status_with_headers(base: str, count: int) -> bytes:
    """GET /status with exactly ``count`` header lines, over a raw socket; the status line."""
    port = int(base.rsplit(":", 1)[1])
    lines = ["GET /status HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"X-Filler-{n}: {n}" for n in range(count - 2)), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode())
        return sock.makefile("rb").readline()


def test_more_than_100_headers_is_431(raw_proxy):
    assert status_with_headers(raw_proxy.base, 100).split()[1] == b"200"
    assert status_with_headers(raw_proxy.base, 101).split()[1] == b"431"


# --- Streamable HTTP: backlog, oversize answers ---------------------------------------------

def streamable_session(base: str) -> dict:
    """initialize (answered as plain JSON) and initialized; the headers of the session."""
    init = requests.post(base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                         headers=STREAM_HEADERS, timeout=10)
    assert init.headers["Content-Type"] == "application/json" and init.json()["id"] == 1
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    assert requests.post(base + "/mcp", json=rpc("notifications/initialized", None),
                         headers=headers, timeout=10).status_code == 202
    return headers


def test_get_stream_delivers_what_the_server_sent_while_none_was_open(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--announce")  # list_changed after initialize
    headers = streamable_session(proxy.base)
    stream = SseReader(requests.get(proxy.base + "/mcp", headers=headers, stream=True,
                                    timeout=10))
    assert stream.next_message() == {"jsonrpc": "2.0",
                                     "method": "notifications/tools/list_changed"}
    stream.close()


def test_oversize_server_answer_is_a_jsonrpc_error_and_the_session_goes_on(proxy_factory):
    proxy = proxy_factory("--max-message-size", "64KiB", "--", *RAW_SERVER)
    headers = streamable_session(proxy.base)
    big = requests.post(proxy.base + "/mcp", headers=headers, timeout=10, json=rpc(
        "tools/call", 2, name="echo", arguments={"text": "x" * 100_000}))
    answer = big.json()
    assert answer["id"] == 2 and answer["error"]["code"] == -32603
    assert "exceeds the proxy's frame cap of 65536 bytes" in answer["error"]["message"]
    small = requests.post(proxy.base + "/mcp", json=rpc("ping", 3), headers=headers, timeout=10)
    assert small.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}
    proxy.expect("dropped a 1000[0-9]{2}-byte message from the server")


def test_config_file_beside_named_server_wins_with_a_warning(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "fromfile": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}}}))
    proxy = proxy_factory("--named-server", "fromflag", shlex.join(RAW_SERVER),
                          "--named-server-config", str(config))
    proxy.expect("--named-server-config given: ignoring --named-server")
    reader, _ = open_sse(proxy.base, "/servers/fromfile/sse")
    reader.close()
    assert requests.get(proxy.base + "/servers/fromflag/sse", timeout=10).status_code == 404


# --- client mode ------------------------------------------------------------------------------

class Forbidden(http.server.BaseHTTPRequestHandler):
    """A remote that answers 403 to everything, or only to POSTs when ``server.get_ok``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.reply(405 if self.server.get_ok else 403)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(403)

    do_DELETE = do_POST


@pytest.fixture
def forbidden_remote():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    server.daemon_threads = True
    server.get_ok = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("transport", ["sse", "streamablehttp", "auto"])
def test_remote_403_at_start_is_an_authentication_error(forbidden_remote, clients, transport):
    _, base = forbidden_remote
    client = clients("--transport", transport, "--start-timeout", "20", base + "/mcp")
    assert client.proc.wait(15) == 1  # at once, not after --start-timeout
    assert "authentication failed" in client.stderr() and "(403)" in client.stderr()


def test_remote_403_on_a_request_is_an_authentication_error(forbidden_remote, clients):
    server, base = forbidden_remote
    server.get_ok = True  # the probe passes; every POST is refused
    client = clients("--transport", "streamablehttp", base + "/mcp")
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS))
    assert answer["id"] == 0
    assert "refused our credentials (403)" in answer["error"]["message"]
    assert client.close() == 0


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamablehttp", "/mcp")])
def test_client_mode_gives_up_after_recovery_timeout(clients, transport, path):
    remote = ProxyProcess("--", *RAW_SERVER).started()
    client = clients("--transport", transport, "--recovery-timeout", "1", remote.base + path)
    try:
        client.handshake()
        assert client.call(rpc("ping", 1)) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    finally:
        remote.stop()
    assert client.proc.wait(20) == 1
    assert "could not reconnect within 1 s" in client.stderr()
