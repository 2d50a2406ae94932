"""Client mode and the 2026-07-28 era: desktop clients of both eras, remotes of both eras.

The desktop client is the official SDK (in its own process, through ``mcp-proxy URL`` on
stdio) or a raw JSON-lines client; the remotes are the SDK fixture server narrowed to one era
(``--era``), our own server mode (which serves the modern era on /mcp and records what its
child got), and a scripted remote where a test must see the very headers sent.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys

import pytest
import requests
from test_lifecycle import wait_until
from test_sdk_e2e import start_remote
from test_shared import methods, recorded

from conftest import INIT_PARAMS, RAW_SERVER, SDK_SERVER, Scripted, rpc, run_driver

MODERN = "2026-07-28"
PROXY = shlex.join([sys.executable, "-m", "mcp_proxy", "--transport", "streamablehttp"])
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"}}
SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
FEATURES = ["tools", "echo", "unicode", "progress", "log", "sample", "elicit", "roots", "fail",
            "unknown_method", "concurrent", "tagged"]
ASKING = {"capabilities": {"sampling": {}, "elicitation": {}, "roots": {}}}


def modern(method: str, request_id=1, **params) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {**params, "_meta": {**META, **params.pop("_meta", {})}}}


def check_features(report: dict) -> None:
    assert {"echo", "sample", "tagged", "change"} <= set(report["tools"])
    assert report["echo"] == "hello" and report["unicode"] == "héllo ✓ 日本"
    assert report["progress"]["values"] == [1, 2, 3]
    assert report["sample"] == "sampled:hi there"
    assert report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    assert report["fail"]["isError"] and "boom" in report["fail"]["text"]
    assert report["unknown_method"]["code"] == -32601
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert report["tagged"] == " Zürich"  # Mcp-Param-Region, base64: the SDK remote checks it
    assert report["log"]["result"] == "logged"
    assert [(m["level"], m["data"]) for m in report["log"]["messages"]] == [
        ("warning", "hello log")]


@pytest.fixture
def sdk_remote():
    """``sdk_remote(era)``: the SDK fixture server on /mcp serving that era; its URL
    (``transport="sse"``: on /sse)."""
    started = []

    def start(era: str, transport: str = "streamable-http") -> str:
        remote, port = start_remote(transport, "--era", era)
        started.append(remote)
        return f"http://127.0.0.1:{port}/{'sse' if transport == 'sse' else 'mcp'}"

    yield start
    for remote in started:
        remote.terminate()
        remote.wait(10)


# --- the official SDK as the desktop client -------------------------------------------------

def test_a_modern_client_is_relayed_to_a_modern_only_remote(sdk_remote):
    report = run_driver("stdio", f"{PROXY} {sdk_remote('modern')}", *FEATURES,
                        extra=("--mode", MODERN))
    assert report["session"]["protocolVersion"] == MODERN
    check_features(report)  # sampling, elicitation and roots: MRTR, driven by the SDK itself


def test_a_dual_era_client_discovers_a_dual_era_remote(sdk_remote):
    report = run_driver("stdio", f"{PROXY} {sdk_remote('both')}", "echo", "sample", "tagged",
                        extra=("--mode", "auto"))
    assert report["session"]["protocolVersion"] == MODERN
    assert report["session"]["serverInfo"]["name"] == "sdk-test-server"
    assert (report["echo"], report["sample"], report["tagged"]) == (
        "hello", "sampled:hi there", " Zürich")


@pytest.mark.parametrize("era", ["auto", "legacy"])
def test_a_dual_era_client_and_a_2025_remote(sdk_remote, era):
    """Bridged by default (its first request is a 2026-07-28 one: test_client_bridge.py);
    with --protocol-era legacy relayed as is, and it falls back to initialize by itself."""
    report = run_driver("stdio", f"{PROXY} --protocol-era {era} {sdk_remote('legacy')}",
                        "echo", "progress", "sample", "elicit", "roots", "log",
                        extra=("--mode", "auto"))
    assert (report["session"]["protocolVersion"] != MODERN) is (era == "legacy")
    assert report["echo"] == "hello" and report["progress"]["values"] == [1, 2, 3]
    assert report["sample"] == "sampled:hi there" and report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"


def test_a_2025_client_is_bridged_to_a_modern_only_remote(sdk_remote):
    report = run_driver("stdio", f"{PROXY} {sdk_remote('modern')}", "set_level", "ping",
                        *FEATURES)
    assert report["session"]["protocolVersion"] == "2025-11-25"
    assert report["session"]["serverInfo"] == {"name": "sdk-test-server", "version": "1.0.0"}
    assert report["set_level"] == {} and report["ping"] == {}
    check_features(report)  # the log line came because setLevel was stamped as logLevel
    assert report["server_requests"] == ["sampling/createMessage", "elicitation/create",
                                         "roots/list"]


@pytest.mark.parametrize("era", ["auto", "legacy"])
def test_a_2025_client_and_a_2025_remote(sdk_remote, era):
    target = f"{PROXY} --protocol-era {era} {sdk_remote('legacy')}"
    report = run_driver("stdio", target, "echo", "sample", "ping")
    assert report["session"]["protocolVersion"] == "2025-11-25"
    assert (report["echo"], report["sample"], report["ping"]) == ("hello", "sampled:hi there",
                                                                  {})


def test_protocol_era_legacy_never_bridges(sdk_remote):
    report = run_driver("stdio", f"{PROXY} --protocol-era legacy {sdk_remote('modern')}",
                        "echo")
    assert report["session"]["code"] == -32022  # the remote's refusal, as it came


@pytest.mark.parametrize("mode, era", [(MODERN, "auto"), ("legacy", "modern")])
def test_chained_to_our_own_server_mode(proxy_factory, mode, era):
    """Both hops modern: client mode relays (or bridges) to server mode's modern lane."""
    proxy = proxy_factory("--", *SDK_SERVER)
    target = f"{PROXY} --protocol-era {era} {proxy.base}/mcp"
    report = run_driver("stdio", target, "set_level", *FEATURES, extra=("--mode", mode))
    # the log line comes: its request is the only one in flight that asked for log lines
    # (the bridge's own listen asks for none)
    check_features(report)
    status = requests.get(proxy.base + "/status", timeout=10).json()
    assert status["children_started"] == 1  # the modern lane's child only: no 2025 session


# --- our own server mode as the remote (it records what its child got) ---------------------

@pytest.fixture
def served(proxy_factory, tmp_path):
    """Server mode in front of raw_server: modern on /mcp, dual-era; ``record`` lists what
    its child was sent."""
    def start(*flags: str):
        record = tmp_path / f"sent{len(flags)}.jsonl"
        proxy = proxy_factory("--keepalive", "60", "--", *RAW_SERVER, *flags,
                              "--record", str(record))
        proxy.record = record
        return proxy
    return start


def test_no_probe_when_the_remote_speaks_2025(served, clients):
    remote = served("--legacy-only")
    client = clients("--transport", "streamablehttp", remote.base + "/mcp")
    assert client.handshake()["result"]["protocolVersion"] == "2025-06-18"
    answer = client.call(rpc("tools/call", 1, name="echo", arguments={"text": "hi"}))
    assert answer["result"]["content"][0]["text"] == "hi"
    assert methods(remote.record)[:2] == ["initialize", "notifications/initialized"]
    assert "server/discover" not in methods(remote.record)


def test_a_stdio_cancel_closes_the_http_stream(served, clients):
    remote = served()
    client = clients("--transport", "streamablehttp", remote.base + "/mcp")
    client.send(modern("tools/call", 7, name="hold", arguments={}))
    wait_until(lambda: "tools/call" in methods(remote.record))
    client.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": 7}})
    # server mode sends the cancel to its child only when it sees the response stream close
    wait_until(lambda: "notifications/cancelled" in methods(remote.record), timeout=2)
    answer = client.call(modern("tools/call", 8, name="echo", arguments={"text": "next"}))
    assert answer["id"] == 8 and answer["result"]["content"][0]["text"] == "next"


def test_a_bridged_cancel_closes_the_http_stream(served, clients):
    remote = served()
    client = clients("--transport", "streamablehttp", "--protocol-era", "modern",
                     remote.base + "/mcp")
    assert client.handshake()["result"]["serverInfo"]
    client.send(rpc("tools/call", 7, name="hold", arguments={}))
    wait_until(lambda: "tools/call" in methods(remote.record))
    client.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": 7}})
    wait_until(lambda: "notifications/cancelled" in methods(remote.record), timeout=2)
    assert "initialize" not in methods(remote.record)  # --protocol-era modern: never tried
    call = next(m for m in recorded(remote.record) if m.get("method") == "tools/call")
    assert call["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN
    answer = client.call(rpc("tools/call", 8, name="echo", arguments={"text": "next"}))
    assert answer == {"jsonrpc": "2.0", "id": 8, "result": {
        "content": [{"type": "text", "text": "next"}]}}  # no resultType: "complete"


def test_a_modern_clients_listen_keeps_its_subscription_id(sdk_remote, clients):
    client = clients("--transport", "streamablehttp", sdk_remote("modern"))
    client.send(modern("subscriptions/listen", "L1",
                       notifications={"toolsListChanged": True}))
    ack = client.recv()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"][SUBSCRIPTION] == "L1"
    changed = client.call(modern("tools/call", 2, name="change", arguments={}))
    found = [changed, client.recv()]
    note = next(m for m in found if m.get("method") == "notifications/tools/list_changed")
    assert note["params"]["_meta"][SUBSCRIPTION] == "L1"


def test_the_bridge_feeds_list_changed_from_its_own_listen(sdk_remote, clients):
    client = clients("--transport", "streamablehttp", sdk_remote("modern"))
    init = client.call(rpc("initialize", 0, **INIT_PARAMS))
    assert init["result"]["capabilities"]["tools"] == {"listChanged": True}
    client.send(rpc("notifications/initialized", None))
    wait_until(lambda: "listening to the remote for" in client.stderr())
    assert "toolsListChanged" in client.stderr()
    first = client.call(rpc("tools/call", 2, name="change", arguments={}))
    found = [first, client.recv()]
    note = next(m for m in found if m.get("method") == "notifications/tools/list_changed")
    assert note == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    answer = next(m for m in found if m.get("id") == 2)
    assert answer["result"]["content"][0]["text"] == "changed"
    assert "resultType" not in answer["result"]
    assert client.call(rpc("resources/subscribe", 3, uri="file:///x")) == {
        "jsonrpc": "2.0", "id": 3, "result": {}}
    wait_until(lambda: "resourceSubscriptions" in client.stderr())  # reopened, new filter


# --- a scripted remote: the exact headers, errors and input rounds ---------------------------

TOOLS = [
    {"name": "good", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "opts": {"type": "object", "properties": {
            "tier": {"type": "integer", "x-mcp-header": "Tier"}}}}}},
    {"name": "on_number", "inputSchema": {"type": "object", "properties": {
        "n": {"type": "number", "x-mcp-header": "N"}}}},
    {"name": "twice", "inputSchema": {"type": "object", "properties": {
        "a": {"type": "string", "x-mcp-header": "Same"},
        "b": {"type": "string", "x-mcp-header": "same"}}}},
    {"name": "in_any_of", "inputSchema": {"type": "object", "anyOf": [{"properties": {
        "a": {"type": "string", "x-mcp-header": "A"}}}]}},
    {"name": "not_a_token", "inputSchema": {"type": "object", "properties": {
        "a": {"type": "string", "x-mcp-header": "A B"}}}},
    {"name": "plain", "inputSchema": {"type": "object"}},
    {"name": "strict", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}}},
]
DISCOVER = {"resultType": "complete", "supportedVersions": [MODERN],
            "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "scripted", "version": "1"}}}


class ModernRemote(Scripted):
    """A modern-only remote: answers by method and tool name, records every request."""

    def do_GET(self) -> None:
        self.server.seen.append(("GET", dict(self.headers), None))
        self.reply(405, Allow="POST")

    def do_DELETE(self) -> None:
        self.server.seen.append(("DELETE", dict(self.headers), None))
        self.reply(405, Allow="POST")

    def do_POST(self) -> None:
        body = json.loads(self.body())
        self.server.seen.append(("POST", dict(self.headers), body))
        if "id" not in body:
            self.reply(202)
        elif self.headers.get("MCP-Protocol-Version") != self.server.version:
            self.reply(400, json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": [self.server.version]}}}).encode())
        elif body["method"] == "server/discover":
            self.reply_result(body["id"], {**DISCOVER, "supportedVersions": [
                self.server.version], "capabilities": getattr(self.server, "capabilities",
                                                              DISCOVER["capabilities"])})
        elif body["method"] == "subscriptions/listen":  # acknowledged, then cut short
            ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                   "params": {"notifications": body["params"]["notifications"],
                              "_meta": {SUBSCRIPTION: body["id"]}}}
            self.reply(200, b"data: " + json.dumps(ack).encode() + b"\n\n",
                       "text/event-stream")
        elif body["method"] == "tools/list":
            self.reply_result(body["id"], {"tools": TOOLS, "resultType": "complete"})
        else:
            self.call(body, body["params"].get("name"), body["params"].get("arguments") or {})

    def call(self, body: dict, name: str, arguments: dict) -> None:
        if name == "strict" and self.headers.get("Mcp-Param-Region") != arguments["region"]:
            self.reply(400, json.dumps({"jsonrpc": "2.0", "id": body["id"], "error": {
                "code": -32020, "message": "Header mismatch: Mcp-Param-Region"}}).encode())
        elif name == "refused":
            self.reply(400, json.dumps({"jsonrpc": "2.0", "id": body["id"], "error": {
                "code": -32020, "message": "Header mismatch", "data": {"header": "Mcp-Name"}}
            }).encode())
        elif name == "broken":
            self.reply(502, b"upstream  exploded\n", "text/plain")
        elif name == "ask" and ("requestState" not in body["params"] or arguments.get("always")):
            self.reply_result(body["id"], {"resultType": "input_required",
                                           "inputRequests": arguments["inputs"],
                                           "requestState": "state-ö \u2028 1"})
        else:
            self.reply_result(body["id"], {"resultType": "complete", "content": [
                {"type": "text", "text": json.dumps(body["params"])}]})


@pytest.fixture
def modern_remote(scripted):
    server, base = scripted(ModernRemote, seen=[], version=MODERN)
    server.url = base + "/mcp"
    return server


def posts(server, method: str) -> list[tuple[dict, dict]]:
    return [(headers, body) for verb, headers, body in server.seen
            if verb == "POST" and body.get("method") == method]


def test_headers_are_stamped_from_the_body(modern_remote, clients):
    client = clients("--transport", "streamablehttp", modern_remote.url)
    listed = client.call(modern("tools/list", 1))
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["good", "plain", "strict"]
    client.wait_stderr("x-mcp-header annotations are invalid")
    answer = client.call(modern("tools/call", 2, name="good",
                                arguments={"region": " Zürich", "opts": {"tier": 3}}))
    assert answer["result"]["resultType"] == "complete"  # a modern client gets it as sent
    headers, body = posts(modern_remote, "tools/call")[0]
    assert body["id"] == 2
    assert headers["MCP-Protocol-Version"] == MODERN
    assert headers["Mcp-Method"] == "tools/call" and headers["Mcp-Name"] == "good"
    assert headers["Mcp-Param-Region"] == "=?base64?" + base64.b64encode(
        " Zürich".encode()).decode() + "?="
    assert headers["Mcp-Param-Tier"] == "3"
    client.call(modern("resources/read", 3, uri="file:///tmp/é"))
    headers, _ = posts(modern_remote, "resources/read")[0]
    assert base64.b64decode(headers["Mcp-Name"][9:-2]).decode() == "file:///tmp/é"
    assert client.close() == 0
    assert not any("Mcp-Session-Id" in h for _, h, _ in modern_remote.seen)
    verbs = [verb for verb, _, _ in modern_remote.seen]
    assert verbs.count("GET") == 1 and verbs[0] == "GET"  # start-up's reachability check only
    assert "DELETE" not in verbs  # no session to end


def test_http_failures_keep_the_remotes_code_and_data(modern_remote, clients):
    client = clients("--transport", "streamablehttp", modern_remote.url)
    refused = client.call(modern("tools/call", 1, name="refused", arguments={}))
    assert refused == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32020, "message": "Header mismatch", "data": {"header": "Mcp-Name"}}}
    broken = client.call(modern("tools/call", "b", name="broken", arguments={}))
    assert broken["id"] == "b"
    assert broken["error"] == {"code": -32000, "message": "HTTP 502: upstream exploded"}


def bridged(clients, url: str, capabilities: dict):
    client = clients("--transport", "streamablehttp", url)
    init = client.call(rpc("initialize", 0, **{**INIT_PARAMS, **capabilities}))
    assert init["result"]["serverInfo"] == {"name": "scripted", "version": "1"}
    client.send(rpc("notifications/initialized", None))
    return client


def test_input_rounds_are_put_to_the_2025_client(modern_remote, clients):
    client = bridged(clients, modern_remote.url, ASKING)
    inputs = {"who": {"method": "elicitation/create", "params": {"message": "name?",
                                                                 "requestedSchema": {}}},
              "llm": {"method": "sampling/createMessage", "params": {"messages": []}}}
    client.send(rpc("tools/call", 5, name="ask", arguments={"inputs": inputs},
                    _meta={"progressToken": "p5"}))
    asked = [client.recv(), client.recv()]
    assert sorted(m["method"] for m in asked) == ["elicitation/create", "sampling/createMessage"]
    assert all(m["id"].startswith("mcp-proxy-in-") for m in asked)
    for message in asked:
        client.send({"jsonrpc": "2.0", "id": message["id"], "result": {"for": message["method"]}})
    answer = client.recv()
    assert answer["id"] == 5 and "resultType" not in answer["result"]
    sent = json.loads(answer["result"]["content"][0]["text"])
    assert sent["requestState"] == "state-ö \u2028 1"  # echoed verbatim
    assert sent["inputResponses"] == {"who": {"for": "elicitation/create"},
                                      "llm": {"for": "sampling/createMessage"}}
    assert sent["_meta"]["progressToken"] == "p5"
    assert sent["_meta"]["io.modelcontextprotocol/clientCapabilities"] == ASKING["capabilities"]
    legs = [body["id"] for _, body in posts(modern_remote, "tools/call")]
    # the first leg has the client's id (its answer needs no splice), the retry one of ours
    assert legs[0] == 5 and legs[1].startswith("mcp-proxy-leg-")


@pytest.mark.parametrize("inputs, capabilities, code, text", [
    ({"r": {"method": "roots/list"}}, {"capabilities": {"sampling": {}}}, -32021, "'roots'"),
    ({"e": {"method": "elicitation/create", "params": {"mode": "url", "url": "https://x"}}},
     ASKING, -32603, "URL-mode elicitation"),
    ({f"k{i}": {"method": "roots/list"} for i in range(9)}, ASKING, -32603, "at most 8"),
    ({"x": {"method": "tasks/get"}}, ASKING, -32603, "'tasks/get'"),
])
def test_input_rounds_the_bridge_refuses(modern_remote, clients, inputs, capabilities, code,
                                         text):
    client = bridged(clients, modern_remote.url, capabilities)
    answer = client.call(rpc("tools/call", 1, name="ask", arguments={"inputs": inputs}))
    assert answer["id"] == 1 and answer["error"]["code"] == code
    assert text in answer["error"]["message"]


def test_more_than_ten_rounds_are_refused(modern_remote, clients):
    client = bridged(clients, modern_remote.url, ASKING)
    client.send(rpc("tools/call", 1, name="ask", arguments={
        "always": True, "inputs": {"r": {"method": "roots/list"}}}))
    for _ in range(10):
        ask = client.recv()
        assert ask["method"] == "roots/list"
        client.send({"jsonrpc": "2.0", "id": ask["id"], "result": {"roots": []}})
    answer = client.recv()
    assert answer["id"] == 1 and "more than 10 times" in answer["error"]["message"]
    assert len(posts(modern_remote, "tools/call")) == 11


def test_the_bridge_answers_the_2025_only_methods_itself(modern_remote, clients):
    client = bridged(clients, modern_remote.url, {})
    assert client.call(rpc("ping", 1))["result"] == {}
    assert client.call(rpc("logging/setLevel", 2, level="info"))["result"] == {}
    client.send(rpc("notifications/roots/list_changed", None))
    answer = client.call(rpc("tools/call", 3, name="plain", arguments={}))
    sent = json.loads(answer["result"]["content"][0]["text"])
    assert sent["_meta"]["io.modelcontextprotocol/logLevel"] == "info"
    assert sent["_meta"]["io.modelcontextprotocol/clientInfo"] == INIT_PARAMS["clientInfo"]
    seen = [body.get("method") for verb, _, body in modern_remote.seen if verb == "POST"]
    assert seen == ["initialize", "server/discover", "tools/call"]


def test_a_header_mismatch_lists_the_tools_again_and_retries_once(modern_remote, clients):
    client = bridged(clients, modern_remote.url, {})
    answer = client.call(rpc("tools/call", 1, name="strict", arguments={"region": "eu"}))
    assert json.loads(answer["result"]["content"][0]["text"])["arguments"] == {"region": "eu"}
    calls = posts(modern_remote, "tools/call")
    assert [h.get("Mcp-Param-Region") for h, _ in calls] == [None, "eu"]
    assert len(posts(modern_remote, "tools/list")) == 1
    refused = client.call(rpc("tools/call", 2, name="refused", arguments={}))
    assert refused["error"]["code"] == -32020 and refused["error"]["data"]
    assert len(posts(modern_remote, "tools/call")) == 4  # one retry, after one more listing


def test_protocol_era_modern_needs_streamable_http():
    done = subprocess.run([sys.executable, "-m", "mcp_proxy", "--protocol-era", "modern",
                           "--transport", "sse", "http://127.0.0.1:9/sse"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "leave out --transport sse" in done.stderr


def test_the_bridge_speaks_the_modern_version_the_remote_names(scripted, clients):
    server, base = scripted(ModernRemote, seen=[], version="2027-01-01")
    client = bridged(clients, base + "/mcp", {})
    answer = client.call(rpc("tools/call", 1, name="plain", arguments={}))
    sent = json.loads(answer["result"]["content"][0]["text"])
    assert sent["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2027-01-01"
    assert [h["MCP-Protocol-Version"] for h, _ in posts(server, "server/discover")] == [
        MODERN, "2027-01-01"]


def test_a_dropped_listen_is_reopened(scripted, clients):
    server, base = scripted(ModernRemote, seen=[], version=MODERN,
                            capabilities={"prompts": {"listChanged": True}})
    client = bridged(clients, base + "/mcp", {})
    wait_until(lambda: len(posts(server, "subscriptions/listen")) >= 2, timeout=10)
    assert "the remote's listen stream ended" in client.stderr()
    _, body = posts(server, "subscriptions/listen")[1]
    assert body["params"]["notifications"] == {"promptsListChanged": True}
    assert body["id"] != posts(server, "subscriptions/listen")[0][1]["id"]


def test_cancelling_a_call_mid_round_withdraws_the_question(modern_remote, clients):
    client = bridged(clients, modern_remote.url, ASKING)
    client.send(rpc("tools/call", 4, name="ask", arguments={
        "inputs": {"r": {"method": "roots/list"}}}))
    ask = client.recv()
    assert ask["method"] == "roots/list"
    client.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": 4}})
    assert client.recv() == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": ask["id"]}}
    answer = client.call(rpc("tools/call", 5, name="plain", arguments={}))
    assert answer["id"] == 5  # nothing was sent for 4, and the session goes on
    assert len(posts(modern_remote, "tools/call")) == 2
