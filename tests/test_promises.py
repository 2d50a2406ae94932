"""What README.md and docs/ promise and no other test checked, each against the real CLI.

Server mode: 404 and 405 with an exact ``Allow``, the ``sessionId`` alias, the Host rules
of a wildcard bind and ``--allow-host``, the header count limit, the GET
``/mcp`` backlog, an oversize server answer, a config file beside ``--named-server``. Client
mode: a remote's 403, and giving up after ``--recovery-timeout``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import threading

import pytest
import requests

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    STREAM_HEADERS,
    ProxyProcess,
    Scripted,
    SseReader,
    open_sse,
    rpc,
)

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

class Forbidden(Scripted):
    """A remote that answers 403 to everything, or only to POSTs when ``server.get_ok``."""

    def do_GET(self) -> None:
        self.reply(405 if self.server.get_ok else 403)

    def do_POST(self) -> None:
        self.body()
        self.reply(403)

    do_DELETE = do_POST


@pytest.mark.parametrize("transport", ["sse", "streamablehttp", "auto"])
def test_remote_403_at_start_is_an_authentication_error(scripted, clients, transport):
    _, base = scripted(Forbidden, get_ok=False)
    client = clients("--transport", transport, "--start-timeout", "20", base + "/mcp")
    assert client.proc.wait(15) == 1  # at once, not after --start-timeout
    assert "authentication failed" in client.stderr() and "(403)" in client.stderr()


def test_remote_403_on_a_request_is_an_authentication_error(scripted, clients):
    _, base = scripted(Forbidden, get_ok=True)  # the probe passes; every POST is refused
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


SERVER_INFO = {"protocolVersion": "2025-06-18", "capabilities": {},
               "serverInfo": {"name": "resumable", "version": "0"}}
PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "p", "progress": 1}}
CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


class Resumable(Scripted):
    """Streamable HTTP whose streams end early: an answer comes on the GET that resumes its
    stream with ``Last-Event-ID`` (SEP-1699 polling); the GET stream ends after one event and
    is expected back with its ``Last-Event-ID``."""

    def do_GET(self) -> None:
        last = self.headers.get("Last-Event-ID")
        self.server.resumes.append((last, self.headers.get("Mcp-Session-Id")))
        if last is None:  # the GET stream: one event, then it ends
            return self.reply_event("g1", CHANGED)
        if last == "g1":
            self.server.reopened.set()
            return self.reply(405)  # reopened as expected; no more GET streams
        answer = {"jsonrpc": "2.0", "id": self.server.pending, "result": {"resumed": last}}
        self.reply_event("a2", answer)

    def do_POST(self) -> None:
        message = json.loads(self.body())
        if "id" not in message:
            return self.reply(202)
        if message["method"] == "initialize":
            return self.reply_result(message["id"], SERVER_INFO, Mcp_Session_Id="r-1")
        self.server.pending = message["id"]
        self.reply_event("a1", PROGRESS, retry="50")


def test_client_mode_resumes_cut_streams_with_last_event_id(scripted, clients):
    server, base = scripted(Resumable, resumes=[], pending=None, reopened=threading.Event())
    client = clients("--transport", "streamablehttp", base + "/mcp")
    client.handshake()
    client.send(rpc("tools/call", 7, name="slow"))
    got = [client.recv() for _ in range(3)]  # the GET stream's event comes when it comes
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"resumed": "a1"}}
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, [CHANGED, PROGRESS, answer]))
    assert got.index(PROGRESS) < got.index(answer)
    assert server.reopened.wait(10), "the GET stream was not reopened with its Last-Event-ID"
    in_session = [get for get in server.resumes if get[1] == "r-1"]  # not the start-up probe
    assert sorted(in_session, key=str) == [("a1", "r-1"), ("g1", "r-1"), (None, "r-1")]
    assert client.close() == 0


# --- documented answers: a failed spawn, a duplicate request id --------------------------------

def test_a_server_that_cannot_be_started_is_a_502(proxy_factory, tmp_path):
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nexec " + shlex.join(RAW_SERVER) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    proxy = proxy_factory("--", str(script))
    os.unlink(script)  # it passed the start-up check; now spawning it fails
    answer = requests.post(proxy.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                           headers=STREAM_HEADERS, timeout=10)
    assert answer.status_code == 502
    assert answer.json()["id"] == 1 and "Could not start the MCP server" in answer.text
    reader, endpoint = open_sse(proxy.base)
    posted = requests.post(endpoint, json=rpc("ping", 2), timeout=10)
    assert posted.status_code == 502 and posted.json()["id"] == 2
    reader.close()


def test_a_request_id_already_in_flight_is_a_400(raw_proxy):
    headers = streamable_session(raw_proxy.base)
    first = requests.post(raw_proxy.base + "/mcp", headers=headers, stream=True, timeout=10,
                          json=rpc("tools/call", 5, name="ask", arguments={"prompt": "hi"}))
    reader = SseReader(first)
    ask = reader.next_message()  # request 5 now waits for our sampling answer
    again = requests.post(raw_proxy.base + "/mcp", json=rpc("ping", 5), headers=headers,
                          timeout=10)
    assert again.status_code == 400
    assert "request id 5 is already in flight" in again.json()["error"]["message"]
    requests.post(raw_proxy.base + "/mcp", headers=headers, timeout=10,
                  json={"jsonrpc": "2.0", "id": ask["id"], "result": {"ok": True}})
    assert reader.next_message()["id"] == 5  # the first request is unharmed
    reader.close()
