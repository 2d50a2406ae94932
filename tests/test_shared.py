"""One server process for many clients: --shared-child, --stateless and --max-sessions.

The shared child is raw_server with ``--record``: the file holds every line the child was
sent, so the tests see exactly what reached it (one initialize, rewritten ids, cancels).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from test_lifecycle import wait_until

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    SDK_SERVER,
    STREAM_HEADERS,
    open_sse,
    open_streamable,
    rpc,
    run_driver,
)


class Client:
    """An SSE client of the shared server: posts messages, keeps what is not an answer."""

    def __init__(self, base: str, capabilities: dict | None = None, path: str = "/sse") -> None:
        self.reader, self.endpoint = open_sse(base, path)
        self.others: list[dict] = []
        answer = self.call(rpc("initialize", "init", **{**INIT_PARAMS,
                                                         "capabilities": capabilities or {}}))
        self.init = answer["result"]
        self.post(rpc("notifications/initialized", None))

    def post(self, message: dict) -> None:
        assert requests.post(self.endpoint, json=message, timeout=10).status_code == 202

    def next(self) -> dict:
        return self.reader.next_message()

    def answer(self, request_id) -> dict:
        """Read until the answer to ``request_id`` (same value and type); keep the rest."""
        while True:
            message = self.next()
            if "method" not in message and message.get("id") == request_id \
                    and type(message.get("id")) is type(request_id):
                return message
            self.others.append(message)

    def call(self, message: dict) -> dict:
        self.post(message)
        return self.answer(message["id"])

    def close(self) -> None:
        self.reader.close()


def tool(name: str, request_id=1, meta: dict | None = None, **arguments) -> dict:
    message = rpc("tools/call", request_id, name=name, arguments=arguments)
    if meta:
        message["params"]["_meta"] = meta
    return message


def recorded(path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    # a line still being written (no newline yet) is read on a later call; split on "\n"
    # alone: splitlines() also splits at U+2028, \x1c and the like, which a JSON string may
    # hold as they are (a hostile _meta in test_traces did)
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].split("\n")
            if line.strip()]


def methods(path) -> list[str]:
    return [m.get("method", "<answer>") for m in recorded(path)]


@pytest.fixture
def shared(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--shared-child", "--", *RAW_SERVER, "--record", str(record))
    proxy.record = record
    return proxy


def test_one_initialize_and_colliding_ids_stay_apart(shared):
    clients = [Client(shared.base) for _ in range(3)]
    for n, client in enumerate(clients):
        client.post(tool("echo", 1, text=f"int-{n}"))
        client.post(tool("echo", "1", text=f"str-{n}"))
    for n, client in enumerate(clients):
        assert client.answer(1)["result"]["content"][0]["text"] == f"int-{n}"
        assert client.answer("1")["result"]["content"][0]["text"] == f"str-{n}"
    sent = recorded(shared.record)
    assert [m.get("method") for m in sent].count("initialize") == 1
    assert [m.get("method") for m in sent].count("notifications/initialized") == 1
    init = next(m for m in sent if m.get("method") == "initialize")
    assert init["params"]["clientInfo"]["name"] == "mcp-proxy"
    assert all(c.init == clients[0].init for c in clients)  # answered from one cached result
    call_ids = [m["id"] for m in sent if m.get("method") == "tools/call"]
    assert len(call_ids) == 6 and len(set(call_ids)) == 6
    assert all(isinstance(i, int) for i in call_ids)
    status = requests.get(shared.base + "/status", timeout=10).json()
    assert status["server_instances"]["default"]["mode"] == "shared"
    assert status["children_started"] == 1
    assert len({s["child"]["pid"] for s in status["session_details"]}) == 1
    for client in clients:
        client.close()


def test_progress_tokens_of_two_clients_are_restored(shared):
    a, b = Client(shared.base), Client(shared.base)
    for client in (a, b):
        answer = client.call(tool("progress", 5, meta={"progressToken": "p"}, steps=2))
        assert answer["result"]["content"][0]["text"] == "done"
        progress = [m for m in client.others if m.get("method") == "notifications/progress"]
        assert [m["params"] for m in progress] == [{"progressToken": "p", "progress": 1},
                                                   {"progressToken": "p", "progress": 2}]
    tokens = [m["params"]["_meta"]["progressToken"] for m in recorded(shared.record)
              if m.get("method") == "tools/call"]
    assert len(set(tokens)) == 2 and "p" not in tokens


def test_server_requests_go_only_to_the_one_capable_client_in_flight(shared):
    a = Client(shared.base, {"sampling": {}})
    b = Client(shared.base)
    # a alone in flight, and capable: the sampling request is a's
    a.post(tool("ask", 1, prompt="hi"))
    request = a.next()
    assert request["method"] == "sampling/createMessage"
    a.post({"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant",
            "content": {"type": "text", "text": "sampled"}}})
    assert "sampled" in a.answer(1)["result"]["content"][0]["text"]
    # b alone in flight, but it did not declare sampling: the child gets an error
    refused = b.call(tool("ask", 2, prompt="hi"))
    assert "did not declare" in refused["result"]["content"][0]["text"]
    # two in flight when the child asks: nobody is guessed
    a.post(tool("ask", 3, prompt="hi", delay=0.5))
    b.post(tool("echo", 4, text="meanwhile"))
    assert "2 clients have requests in flight" in a.answer(3)["result"]["content"][0]["text"]
    assert b.answer(4)["result"]["content"][0]["text"] == "meanwhile"
    assert not any(m.get("method") == "sampling/createMessage" for m in a.others + b.others)
    a.close()
    b.close()


def test_a_client_can_cancel_only_its_own_requests(shared):
    a = Client(shared.base, {"sampling": {}})
    b = Client(shared.base)
    a.post(tool("ask", 7, prompt="hold"))  # in flight until a answers the sampling request
    request = a.next()
    b.post(rpc("notifications/cancelled", None, requestId=7))  # not b's request
    b.post(rpc("notifications/cancelled", None, requestId="7"))
    a.post(rpc("notifications/cancelled", None, requestId=7, reason="changed my mind"))
    wait_until(lambda: "notifications/cancelled" in methods(shared.record))
    a.post({"jsonrpc": "2.0", "id": request["id"], "result": {}})  # the child goes on
    assert b.call(tool("echo", 8, text="b"))["result"]  # after all of the above
    cancels = [m for m in recorded(shared.record) if m.get("method") == "notifications/cancelled"]
    child_id = next(m["id"] for m in recorded(shared.record)
                    if m.get("method") == "tools/call" and m["params"]["name"] == "ask")
    assert [c["params"]["requestId"] for c in cancels] == [child_id]  # a's, rewritten
    a.close()
    b.close()


def test_a_cancelled_request_no_longer_counts_as_in_flight(proxy_factory, tmp_path):
    """A server that never answers a cancelled request (the TypeScript SDK's way) must not
    leave it in flight: else every later server request is refused as unattributable. But
    while its handler may still run (until the server answers it, or for the drain time), a
    server request may be that handler's: it is not given to another client alone in flight."""
    shared = proxy_factory("--shared-child", "--", *RAW_SERVER, "--record",
                           str(tmp_path / "sent.jsonl"), env={"MCP_PROXY_CANCEL_DRAIN": "1.5"})
    shared.record = tmp_path / "sent.jsonl"
    a = Client(shared.base)
    b = Client(shared.base, {"sampling": {}})
    a.post(tool("hold", 1))
    wait_until(lambda: "tools/call" in methods(shared.record))
    a.post(rpc("notifications/cancelled", None, requestId=1))
    wait_until(lambda: "notifications/cancelled" in methods(shared.record))
    refused = b.call(tool("ask", 5, prompt="a's handler may still run"))
    assert "2 clients have requests in flight (or cancelled within 1.5 s)" in json.dumps(
        refused), refused
    shared.expect("cancelled within 1.5 s")
    time.sleep(1.6)  # not a synchronisation: the drain time itself has to pass
    b.post(tool("ask", 2, prompt="only b is in flight"))
    request = b.next()
    assert request["method"] == "sampling/createMessage", request
    b.post({"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant",
            "content": {"type": "text", "text": "sampled"}}})
    assert "sampled" in b.answer(2)["result"]["content"][0]["text"]
    # a late answer to a cancelled request is dropped, not delivered
    a.post(tool("late", 3, seconds=0.3))
    a.post(rpc("notifications/cancelled", None, requestId=3))
    assert a.call(tool("echo", 4, text="after"))["result"]  # the child answers 3 first
    assert not [m for m in a.others if m.get("id") == 3]
    a.close()
    b.close()


def test_subscriptions_are_counted_and_updates_go_to_subscribers(shared):
    a, b, c = Client(shared.base), Client(shared.base), Client(shared.base)
    for n, client in enumerate((a, b)):
        assert client.call(rpc("resources/subscribe", 10 + n, uri="file:///x"))["result"] == {}
    assert methods(shared.record).count("resources/subscribe") == 1
    c.call(tool("update", 20, uri="file:///x"))
    for client in (a, b):
        update = client.next()
        assert update["method"] == "notifications/resources/updated"
        assert update["params"]["uri"] == "file:///x"
    c.call(tool("echo", 21, text="after"))
    assert not any(m.get("method") == "notifications/resources/updated" for m in c.others)
    a.call(rpc("resources/unsubscribe", 30, uri="file:///x"))
    assert "resources/unsubscribe" not in methods(shared.record)  # b still holds it
    b.call(rpc("resources/unsubscribe", 31, uri="file:///x"))
    wait_until(lambda: "resources/unsubscribe" in methods(shared.record))
    for client in (a, b, c):
        client.close()


def test_log_levels_are_per_client(shared):
    a, b = Client(shared.base), Client(shared.base)
    assert a.call(rpc("logging/setLevel", 1, level="debug"))["result"] == {}
    assert b.call(rpc("logging/setLevel", 1, level="error"))["result"] == {}
    wait_until(lambda: "logging/setLevel" in methods(shared.record))
    levels = [m["params"]["level"] for m in recorded(shared.record)
              if m.get("method") == "logging/setLevel"]
    assert levels == ["debug"]  # the most verbose any client asked for
    a.call(tool("notify", 2, level="warning"))
    assert a.next()["params"]["level"] == "warning"
    b.call(tool("notify", 3, level="error"))
    assert b.next()["params"]["level"] == "error"  # b's first log line: the warning skipped
    a.close()
    b.close()


def test_a_dead_shared_child_is_restarted_and_sessions_survive(shared):
    a, b = Client(shared.base), Client(shared.base)
    a.call(rpc("resources/subscribe", 1, uri="file:///kept"))
    a.call(rpc("logging/setLevel", 2, level="info"))
    crashed = a.call(tool("crash", 3))
    assert "exited" in crashed["error"]["message"]
    wait_until(lambda: methods(shared.record).count("initialize") == 2)
    wait_until(lambda: requests.get(shared.base + "/status", timeout=10).json()
               ["server_instances"]["default"]["shared_state"] == "running")
    replayed = methods(shared.record)
    after = replayed[replayed.index("initialize", 1):]
    assert "resources/subscribe" in after and "logging/setLevel" in after
    for n, client in enumerate((a, b)):  # no new initialize needed
        assert client.call(tool("echo", 10 + n, text="again"))["result"]
    a.close()
    b.close()


def test_a_crash_loop_stops_restarts_and_shows_in_readyz(proxy_factory):
    proxy = proxy_factory("--shared-child", "--", *RAW_SERVER, "--exit-after", "1")
    for _ in range(6):  # each start dies on the proxy's own initialize
        reader, endpoint = open_sse(proxy.base)
        answer = requests.post(endpoint, json=rpc("initialize", 1, **INIT_PARAMS), timeout=30)
        assert answer.status_code == 502, answer.text
        reader.close()
    ready = requests.get(proxy.base + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert "crash loop" in json.dumps(ready.json())


def test_stateless_with_the_official_sdk_client(proxy_factory):
    proxy = proxy_factory("--stateless", "--", *SDK_SERVER)
    report = run_driver("streamable", proxy.base + "/mcp", "tools", "echo", "unicode",
                        "progress", "log", "fail", "ping", "unknown_method", "concurrent")
    assert report["echo"] == "hello" and report["progress"]["values"] == [1, 2, 3]
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert report["unknown_method"]["code"] == -32601
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 1, **INIT_PARAMS))
    assert init.status_code == 200 and "Mcp-Session-Id" not in init.headers
    for method in ("GET", "DELETE"):
        refused = requests.request(method, proxy.base + "/mcp", headers=STREAM_HEADERS,
                                   timeout=10)
        assert refused.status_code == 405 and refused.headers["Allow"] == "POST, OPTIONS"
    status = requests.get(proxy.base + "/status", timeout=10).json()
    assert status["stateless"] and status["sessions"] == 0 and status["children_started"] == 1


def test_max_sessions_answers_503(proxy_factory):
    proxy = proxy_factory("--max-sessions", "2", "--", *RAW_SERVER)
    first, _ = open_sse(proxy.base)
    second = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                           json=rpc("initialize", 1, **INIT_PARAMS))
    assert second.status_code == 200
    for refused in (requests.get(proxy.base + "/sse", timeout=10),
                    requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                                  json=rpc("initialize", 1, **INIT_PARAMS))):
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert "Too many sessions" in refused.json()["error"]["message"]
    first.close()
    wait_until(lambda: requests.get(proxy.base + "/status", timeout=10).json()["sessions"] == 1)
    again, _ = open_sse(proxy.base)  # a freed place is taken again
    again.close()


def test_named_servers_choose_their_mode(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "shared": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:], "shared": True,
                   "maxSessions": 1},
        "own": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}}}))
    proxy = proxy_factory("--named-server-config", str(config))
    clients = [Client(proxy.base, path=path) for path in
               ("/servers/shared/sse", "/servers/own/sse", "/servers/own/sse")]
    threads = [threading.Thread(target=c.call, args=(tool("echo", 1, text="x"),))
               for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    status = requests.get(proxy.base + "/status", timeout=10).json()["server_instances"]
    assert (status["shared"]["mode"], status["shared"]["children"]) == ("shared", 1)
    assert (status["own"]["mode"], status["own"]["children"]) == ("per-session", 2)
    full = requests.get(proxy.base + "/servers/shared/sse", timeout=10)
    assert full.status_code == 503 and "maxSessions" in full.json()["error"]["message"]
    for client in clients:
        client.close()


def test_streamable_and_sse_sessions_share_one_process(shared):
    sse = Client(shared.base)
    headers = open_streamable(shared.base)
    assert headers["Mcp-Session-Id"]
    sse.post(tool("echo", 1, text="over sse"))
    answer = requests.post(shared.base + "/mcp", headers=headers, timeout=10,
                           json=tool("echo", 1, text="over mcp"))
    assert answer.json() == {"jsonrpc": "2.0", "id": 1,
                             "result": {"content": [{"type": "text", "text": "over mcp"}]}}
    assert sse.answer(1)["result"]["content"][0]["text"] == "over sse"
    assert methods(shared.record).count("initialize") == 1
    assert requests.delete(shared.base + "/mcp", headers=headers, timeout=10).status_code == 200
    assert sse.call(tool("echo", 2, text="still here"))["result"]  # the process goes on
    sse.close()


def test_each_client_gets_the_2025_era_version_it_asked_for(shared):
    """The child speaks the proxy's (newest) version; a client that asked for an older one it
    supports is answered with that one, as a server that supports it must answer."""
    versions = {}
    for asked in ("2024-11-05", "2025-06-18", "2025-11-25", "1999-01-01"):
        reader, endpoint = open_sse(shared.base)
        assert requests.post(endpoint, timeout=10, json=rpc(
            "initialize", 1, **{**INIT_PARAMS, "protocolVersion": asked})).status_code == 202
        versions[asked] = reader.next_message()["result"]["protocolVersion"]
        reader.close()
    assert versions == {"2024-11-05": "2024-11-05", "2025-06-18": "2025-06-18",
                        "2025-11-25": "2025-11-25", "1999-01-01": "2025-11-25"}
    sent = recorded(shared.record)
    assert [m.get("method") for m in sent].count("initialize") == 1  # the child's one
