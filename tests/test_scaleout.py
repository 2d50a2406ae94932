"""Sessions across hosts through Redis: two real proxies share one real redis-server.

Two processes (each a "host") make every cross-worker path deterministic: a request sent to
the proxy that does not own its session must be forwarded to the owner. Each proxy marks its
answers with the route they took (``MCP_PROXY_ROUTE_HEADER``), so every test proves which
path it exercised. gunicorn with several workers is tested in test_scaleout_gunicorn.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from test_lifecycle import wait_until
from test_modern import META, MODERN

from conftest import RAW_SERVER, SDK_SERVER, SERVERS, STREAM_HEADERS, open_sse, pids_alive, rpc

PING = 0.3  # the owners' heartbeat interval in these tests (MCP_PROXY_BUS_PING)
ENV = {"MCP_PROXY_ROUTE_HEADER": "1", "MCP_PROXY_BUS_PING": str(PING)}


class Pair:
    """Two proxies on one Redis: ``a`` owns the sessions it opens, ``b`` forwards to it."""

    def __init__(self, proxy_factory, redis_server, *command: str) -> None:
        args = ("--redis-url", redis_server.url, "--keepalive", "1", "--max-body-size", "8MiB",
                "--", *command)
        self.a = proxy_factory(*args, env=ENV)
        self.b = proxy_factory(*args, env=ENV)
        self.redis = redis_server
        for proxy in (self.a, self.b):
            proxy.expect(r"listening on Redis")

    def status(self, proxy) -> dict:
        return requests.get(proxy.base + "/status", timeout=5).json()


@pytest.fixture
def pair(proxy_factory, redis_server):
    return Pair(proxy_factory, redis_server, *RAW_SERVER)


def route(response: requests.Response) -> str:
    return response.headers["Mcp-Proxy-Route"].split()[1]


def post(url: str, message: dict, headers: dict | None = None, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 15)
    return requests.post(url, json=message, headers=headers or STREAM_HEADERS, **kwargs)


def session_headers(base: str) -> dict:
    init = post(base + "/mcp", rpc("initialize", 0, protocolVersion="2025-06-18",
                                   capabilities={"sampling": {}},
                                   clientInfo={"name": "tests", "version": "0"}))
    assert init.status_code == 200, init.text
    return {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
            "Mcp-Protocol-Version": "2025-06-18"}


def events(response: requests.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ")]


def test_an_sse_session_takes_posts_on_either_host_in_order(pair):
    reader, endpoint = open_sse(pair.a.base)
    session_id = endpoint.rsplit("=", 1)[1]
    assert len(session_id) == 40 and session_id.startswith(pair.status(pair.a)["worker"]["id"])
    path = endpoint[len(pair.a.base):]
    init = rpc("initialize", "init", protocolVersion="2024-11-05", capabilities={},
               clientInfo={"name": "tests", "version": "0"})
    assert post(pair.b.base + path, init).status_code == 202
    assert reader.next_message()["id"] == "init"
    routes = []
    for n in range(40):  # a fresh connection each, alternating hosts; ids of both types
        request_id = n if n % 2 else f"s{n}"
        answer = post((pair.a if n % 3 == 0 else pair.b).base + path, rpc("ping", request_id))
        assert answer.status_code == 202, answer.text
        routes.append(route(answer))
    got = [reader.next_message()["id"] for _ in range(40)]
    assert got == [n if n % 2 else f"s{n}" for n in range(40)]
    assert {"local", "forwarded"} <= set(routes)
    worker_a, worker_b = pair.status(pair.a)["worker"], pair.status(pair.b)["worker"]
    assert worker_b["forwarded"] == routes.count("forwarded") + 1
    assert worker_a["served"] == routes.count("forwarded") + 1
    assert worker_a["local"] == routes.count("local")
    assert worker_a["redis"] == "connected" and worker_a["routing"] == "ok"
    page = requests.get(pair.a.base + "/metrics", timeout=5).text
    assert f'mcp_proxy_worker_info{{worker="{worker_a["id"]}"}} 1.0' in page
    assert "mcp_proxy_redis_connected 1.0" in page
    assert f'mcp_proxy_routed_requests_total{{route="served"}} {worker_a["served"]}.0' in page
    reader.close()


def test_streamable_calls_progress_and_big_messages_cross_hosts(pair):
    headers = session_headers(pair.a.base)
    url = pair.b.base + "/mcp"
    assert post(url, rpc("notifications/initialized", None), headers).status_code == 202
    for request_id in (7, "seven"):
        answer = post(url, rpc("tools/call", request_id, name="echo",
                               arguments={"text": "hi"}), headers)
        assert route(answer) == "forwarded"
        assert answer.json() == {"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": "hi"}]}}
    answer = post(url, rpc("tools/call", 8, name="progress", arguments={"steps": 3},
                           _meta={"progressToken": "tok"}), headers)
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    got = events(answer)
    assert [m["params"]["progress"] for m in got[:3]] == [1, 2, 3]
    assert got[3]["id"] == 8 and got[3]["result"]["content"][0]["text"] == "done"
    big = "x" * (4 << 20)  # 4 MiB each way: both travel by reference (a blob key)
    answer = post(url, rpc("tools/call", 9, name="echo", arguments={"text": big}), headers)
    assert answer.status_code == 200 and route(answer) == "forwarded"
    assert answer.json()["result"]["content"][0]["text"] == big
    assert pair.redis.client().keys("mcpp:blob:*") == []  # each taken once
    assert requests.delete(url, headers=headers, timeout=5).status_code == 200
    gone = post(pair.a.base + "/mcp", rpc("ping", 10), headers)
    assert gone.status_code == 404


@pytest.mark.parametrize("call_on,reply_on", [("b", "a"), ("a", "b")])
def test_a_sampling_round_trip_crosses_hosts(pair, call_on, reply_on):
    headers = session_headers(pair.a.base)
    proxies = {"a": pair.a, "b": pair.b}
    call = post(proxies[call_on].base + "/mcp", rpc("tools/call", 5, name="ask",
                                                    arguments={"prompt": "2+2"}),
                headers, stream=True)
    assert route(call) == ("local" if call_on == "a" else "forwarded")
    lines = call.iter_lines()
    request = next(json.loads(line[6:]) for line in lines if line.startswith(b"data: "))
    assert request["method"] == "sampling/createMessage"
    reply = post(proxies[reply_on].base + "/mcp", {"jsonrpc": "2.0", "id": request["id"],
                                                   "result": {"text": "4"}}, headers)
    assert reply.status_code == 202
    assert route(reply) == ("local" if reply_on == "a" else "forwarded")
    answer = next(json.loads(line[6:]) for line in lines if line.startswith(b"data: "))
    assert answer["id"] == 5 and json.loads(answer["result"]["content"][0]["text"]) == \
        {"text": "4"}


def test_a_get_stream_on_another_host_carries_server_messages_and_its_close(pair):
    headers = session_headers(pair.a.base)
    stream = requests.get(pair.b.base + "/mcp", headers=headers, stream=True, timeout=10)
    assert stream.status_code == 200 and route(stream) == "forwarded"
    wait_until(lambda: pair.status(pair.a)["worker"]["served"] >= 1, 5)
    answer = post(pair.a.base + "/mcp", rpc("tools/call", 3, name="update",
                                            arguments={"uri": "memo://x"}), headers)
    assert answer.status_code == 200
    lines = stream.iter_lines()
    note = next(json.loads(line[6:]) for line in lines if line.startswith(b"data: "))
    assert note == {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                    "params": {"uri": "memo://x"}}
    stream.close()  # the receiving host sees the close and tells the owner
    pair.a.expect(r"client closed its GET stream", timeout=3)
    pair.a.expect(r"did not reopen it within", timeout=5)  # the owner ended the session
    assert post(pair.b.base + "/mcp", rpc("ping", 4), headers).status_code == 404


def test_a_silent_owner_ends_a_forwarded_call_with_an_error(pair):
    headers = session_headers(pair.a.base)
    _, endpoint = open_sse(pair.a.base)
    sse_path = endpoint[len(pair.a.base):]
    call = post(pair.b.base + "/mcp", rpc("tools/call", 6, name="progress",
                                          arguments={"steps": 1},
                                          _meta={"progressToken": 1}), headers)
    assert call.status_code == 200  # a working forwarded stream first
    os.kill(pair.a.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = post(pair.b.base + "/mcp", rpc("ping", 7), headers, timeout=10)
        waited = time.monotonic() - started
        # a 202 means "taken by the owner": never given for a message the owner did not take
        unacked = post(pair.b.base + sse_path, rpc("ping", 9), timeout=10)
    finally:
        os.kill(pair.a.proc.pid, signal.SIGCONT)
    assert answer.status_code == 504, answer.text
    assert answer.json()["id"] == 7 and "did not answer" in answer.json()["error"]["message"]
    assert waited < 3 * PING + 2  # three missed heartbeats, then the answer
    assert unacked.status_code == 504, unacked.text
    assert post(pair.b.base + "/mcp", rpc("ping", 8), headers).status_code == 200


def test_an_owner_that_dies_leaves_404s_and_no_processes(pair):
    sse, endpoint = open_sse(pair.a.base)
    path = endpoint[len(pair.a.base):]
    headers = session_headers(pair.a.base)
    assert post(pair.b.base + path, rpc("ping", 1)).status_code == 202
    assert sse.next_message()["id"] == 1  # answered before its owner dies (a loaded machine)
    survivor = session_headers(pair.b.base)
    children = [s["child"]["pid"] for s in pair.status(pair.a)["session_details"]
                if s["child"]]
    assert children
    pair.a.proc.kill()
    pair.a.proc.wait(5)
    started = time.monotonic()
    assert post(pair.b.base + path, rpc("ping", 2)).status_code == 404
    assert post(pair.b.base + "/mcp", rpc("ping", 3), headers).status_code == 404
    assert time.monotonic() - started < 2 * (2.0 + 1.0)  # each within the grace and a second
    wait_until(lambda: not pids_alive(children), 2)
    for n in range(20):  # the other host's own sessions are untouched
        assert post(pair.b.base + "/mcp", rpc("ping", n), survivor).json()["id"] == n
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        EOFError)):  # the stream died with its owner
        sse.next_event()


def test_a_redis_outage_is_503_for_remote_sessions_only_and_heals(pair):
    mine = session_headers(pair.b.base)
    remote = session_headers(pair.a.base)
    stream = requests.get(pair.b.base + "/mcp", headers=mine, stream=True, timeout=10)
    pair.redis.stop()
    wait_until(lambda: pair.status(pair.b)["worker"]["routing"] == "degraded", 5)
    assert post(pair.b.base + "/mcp", rpc("ping", 1), mine).status_code == 200
    refused = post(pair.b.base + "/mcp", rpc("ping", 2), remote)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert refused.json()["id"] == 2
    assert pair.status(pair.b)["worker"]["redis"] == "disconnected"
    pair.redis.start()
    healed = time.monotonic()
    wait_until(lambda: post(pair.b.base + "/mcp", rpc("ping", 3), remote).status_code == 200,
               3)
    assert time.monotonic() - healed < 3
    assert stream.raw.read(1)  # the GET stream stayed open all along (pings flow)
    stream.close()


# the SDK server, and behind legacy_only.py: the retry resumes a call the modern->legacy
# bridge parked (issue 25)
@pytest.mark.parametrize("command", [
    SDK_SERVER, [sys.executable, str(SERVERS / "legacy_only.py"), *SDK_SERVER]],
    ids=["modern", "bridged"])
def test_a_modern_retry_goes_back_to_the_child_that_sealed_its_handle(proxy_factory,
                                                                      redis_server, command):
    pair = Pair(proxy_factory, redis_server, *command)
    meta = {**META, "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}
    headers = {**STREAM_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": "sample"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "sample", "arguments": {"prompt": "hi"}, "_meta": meta}}
    first = post(pair.a.base + "/mcp", call, headers).json()["result"]
    assert first["requestState"].startswith("mcp-proxy:" + pair.status(pair.a)["worker"]["id"])
    (key,) = first["inputRequests"]
    call["params"].update(requestState=first["requestState"], inputResponses={key: {
        "role": "assistant", "content": {"type": "text", "text": "sampled:hi"},
        "model": "m", "stopReason": "endTurn"}})
    call["id"] = 2
    retried = post(pair.b.base + "/mcp", call, headers)
    assert route(retried) == "forwarded"
    assert retried.json()["result"]["content"][0]["text"] == "sampled:hi"
    plain = post(pair.b.base + "/mcp", {**call, "id": 3, "params": {
        "name": "sample", "arguments": {"prompt": "x"}, "_meta": meta}}, headers)
    assert route(plain) == "local"  # a modern request is served wherever it lands


def test_the_bus_carries_no_credentials(proxy_factory, redis_server):
    args = ("--redis-url", redis_server.url, "--auth-token", "s3cret", "--", *RAW_SERVER)
    a, b = proxy_factory(*args, env=ENV), proxy_factory(*args, env=ENV)
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    auth = {"Authorization": "Bearer s3cret"}
    headers = {**session_headers_with(a.base, auth), "Cookie": "c=crumb"}
    monitor = socket.create_connection(("127.0.0.1", redis_server.port), timeout=5)
    monitor.sendall(b"MONITOR\r\n")
    assert monitor.recv(5) == b"+OK\r\n"
    answer = post(b.base + "/mcp", rpc("ping", 1), headers)
    assert answer.status_code == 200 and route(answer) == "forwarded"
    assert post(b.base + "/mcp", rpc("ping", 2),
                {**headers, "Authorization": "Bearer wrong"}).status_code == 401
    assert post(b.base + "/mcp", rpc("ping", 3),  # checked where it lands, before forwarding
                {**headers, "Host": "evil.example"}).status_code == 421
    seen = b""
    monitor.settimeout(1)
    try:
        while b'\\"resp\\"' not in seen:
            seen += monitor.recv(65536)
    except TimeoutError:
        pass
    monitor.close()
    assert b"mcpp:in:" in seen and b"ping" in seen  # the frames were seen
    assert b"s3cret" not in seen and b"crumb" not in seen


def session_headers_with(base: str, extra: dict) -> dict:
    init = requests.post(base + "/mcp", headers={**STREAM_HEADERS, **extra}, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18",
                                  capabilities={}, clientInfo={"name": "t", "version": "0"}))
    assert init.status_code == 200, init.text
    return {**STREAM_HEADERS, **extra, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
            "Mcp-Protocol-Version": "2025-06-18"}


def test_a_worker_whose_inbox_fails_exits(proxy_factory, redis_server):
    """Not a lost connection but a refusal (here an ACL that forbids SUBSCRIBE): the proxy
    must exit rather than own sessions nobody can reach."""
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "nosub", "on", ">pw", "~*", "&*", "+@all",
                          "-subscribe")
    url = redis_server.url.replace("redis://", "redis://nosub:pw@")
    proxy = proxy_factory("--redis-url", url, "--", *RAW_SERVER, wait=False)
    assert proxy.proc.wait(15) == 70
    proxy.expect(r"CRITICAL .*Redis inbox of this worker failed")


def test_the_readme_acl_user_is_enough(proxy_factory, redis_server):
    """The documented ``ACL SETUSER`` line, as written there, lets the proxies do all they do."""
    readme = (Path(__file__).parent.parent / "docs" / "deployment.md").read_text()
    line = next(line.strip() for line in readme.splitlines()
                if line.strip().startswith("ACL SETUSER mcp-proxy"))
    redis_server.client().execute_command(*line.replace(">SECRET", ">pw").split())
    url = redis_server.url.replace("redis://", "redis://mcp-proxy:pw@")
    args = ("--redis-url", url, "--max-body-size", "8MiB", "--", *RAW_SERVER)
    a, b = proxy_factory(*args, env=ENV), proxy_factory(*args, env=ENV)
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    headers = session_headers(a.base)
    big = "y" * (1 << 20)  # through a blob key: SET, GETDEL
    answer = post(b.base + "/mcp", rpc("tools/call", 1, name="echo", arguments={"text": big}),
                  headers)
    assert route(answer) == "forwarded"
    assert answer.json()["result"]["content"][0]["text"] == big
    assert requests.get(b.base + "/status", timeout=5).json()["worker"]["redis"] == "connected"
    limited = redis_server.client(username="mcp-proxy", password="pw")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.get("other:key")
    for proxy in (a, b):
        assert "CRITICAL" not in proxy.stderr() and "NOPERM" not in proxy.stderr()


@pytest.mark.parametrize("sharing", [(), ("--shared-child",)])
def test_named_servers_and_shared_children_are_forwarded_too(proxy_factory, redis_server,
                                                           sharing):
    command = " ".join(RAW_SERVER)
    args = ("--redis-url", redis_server.url, *sharing, "--named-server", "one", command,
            "--named-server", "two", command)
    a, b = proxy_factory(*args, env=ENV), proxy_factory(*args, env=ENV)
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    for name in ("one", "two"):
        headers = session_headers(f"{a.base}/servers/{name}")
        answer = post(f"{b.base}/servers/{name}/mcp", rpc("tools/call", name, name="echo",
                                                          arguments={"text": name}), headers)
        assert route(answer) == "forwarded"
        assert answer.json()["result"]["content"][0]["text"] == name
        other = "two" if name == "one" else "one"  # a session belongs to its own server
        assert post(f"{b.base}/servers/{other}/mcp", rpc("ping", 1), headers
                    ).status_code == 404
    details = requests.get(a.base + "/status", timeout=5).json()["session_details"]
    assert {d["server"] for d in details} == {"one", "two"}
    assert all(d["child"]["shared"] == bool(sharing) for d in details)


def test_a_client_leaving_a_forwarded_modern_retry_cancels_it_on_the_child(proxy_factory,
                                                                           redis_server,
                                                                           tmp_path):
    record = tmp_path / "sent.jsonl"
    pair = Pair(proxy_factory, redis_server, *RAW_SERVER, "--record", str(record))
    headers = {**STREAM_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": "mrtr"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "mrtr", "arguments": {}, "_meta": META}}
    first = post(pair.a.base + "/mcp", call, headers).json()["result"]
    call["params"]["requestState"] = first["requestState"]
    call["id"] = 2
    retry = post(pair.b.base + "/mcp", call, headers, stream=True)  # held by the child
    assert retry.status_code == 200 and route(retry) == "forwarded"
    retry.close()
    left = time.monotonic()

    def cancelled() -> dict | None:
        for line in record.read_text().splitlines():
            sent = json.loads(line)
            if sent.get("method") == "notifications/cancelled":
                return sent
        return None
    sent = wait_until(cancelled, 5, interval=0.02)
    assert time.monotonic() - left < 1.0
    retried = [json.loads(line) for line in record.read_text().splitlines()
               if '"mrtr"' in line and "requestState" in line]
    assert sent["params"]["requestId"] == retried[0]["id"]  # the child's id for the retry
    assert retried[0]["params"]["requestState"] == "mrtr-1"  # unwrapped by its sealer


MALFORMED_FRAMES = [  # valid JSON headers of the wrong shape, as a bug or anyone who can
    {"k": "held", "f": "x", "cs": 5},  # PUBLISH to Redis could send them
    {"k": "cancel", "f": ["x"], "c": "1"},
    {"k": "alive", "cs": [["a"]]},
    {"k": "data", "c": {}},
    {"k": "call", "c": "1"},
    {"k": ["call"]},
    [1, 2],
]


def test_malformed_bus_frames_are_dropped_and_the_worker_serves_on(pair):
    tag = pair.status(pair.a)["worker"]["id"]
    headers = session_headers(pair.a.base)
    publisher = pair.redis.client()
    for header in MALFORMED_FRAMES:
        frame = json.dumps(header).encode() + b"\n" + b"payload"
        assert publisher.publish(f"mcpp:in:{tag}", frame) == 1
    pair.a.expect(r"dropped a malformed .*bus frame")
    for n in range(3):  # its inbox reader lives on: forwarded requests are still served
        answer = post(pair.b.base + "/mcp", rpc("ping", n), headers)
        assert answer.status_code == 200 and answer.json()["id"] == n, answer.text
    assert pair.a.proc.poll() is None
    assert "Traceback" not in pair.a.stderr()
