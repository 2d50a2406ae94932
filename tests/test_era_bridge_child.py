"""Server mode: a 2025-era client in front of a server process that speaks only 2026-07-28.

The child is ``tests/servers/modern_only.py`` (the SDK fixture server behind a gate that
refuses ``initialize``, records what it was sent, and can answer with hostile results); the
client is the official SDK in legacy mode (``sdk_driver.py``) over /sse and /mcp, or raw
HTTP where a test must see the exact messages. Per-session and shared children.
"""

from __future__ import annotations

import json
import sys

import pytest
import requests
from gevent.event import AsyncResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle import wait_until
from test_shared import methods, recorded

from conftest import (
    INIT_PARAMS,
    SDK_SERVER,
    SERVERS,
    STREAM_HEADERS,
    open_sse,
    rpc,
    run_driver,
)
from mcp_proxy.bridging.legacy_face import LegacyFace
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import LEGACY_VERSIONS

MODERN_ONLY = [sys.executable, str(SERVERS / "modern_only.py")]
SCENARIOS = ("set_level", "tools", "echo", "progress", "log", "sample", "elicit", "roots",
             "subscribe", "cancel", "ping")
LISTED = "io.modelcontextprotocol/subscriptionId"


@pytest.fixture
def modern_proxy(proxy_factory, tmp_path):
    """``modern_proxy(*flags, child_flags=())``: the proxy in front of modern_only.py; its
    ``record`` lists what the child(ren) got."""
    def start(*flags: str, child_flags: tuple = ()):
        record = tmp_path / f"sent{len(flags)}{len(child_flags)}.jsonl"
        proxy = proxy_factory("--keepalive", "60", *flags, "--", *MODERN_ONLY, *child_flags,
                              "--record", str(record))
        proxy.record = record
        return proxy
    return start


def status(proxy) -> dict:
    return requests.get(proxy.base + "/status", timeout=10).json()


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
@pytest.mark.parametrize("transport", ["sse", "streamable"])
def test_the_sdk_client_in_legacy_mode(modern_proxy, transport, shared):
    proxy = modern_proxy(*(["--shared-child"] if shared else []))
    path = "/sse" if transport == "sse" else "/mcp"
    report = run_driver(transport, proxy.base + path, *SCENARIOS)
    assert report["session"]["protocolVersion"] == "2025-11-25"
    assert report["session"]["serverInfo"] == {"name": "sdk-test-server", "version": "1.0.0"}
    assert {"echo", "progress", "sample", "touch"} <= set(report["tools"])
    assert report["echo"] == "hello" and report["ping"] == {} and report["set_level"] == {}
    assert report["progress"]["values"] == [1, 2, 3] and report["progress"]["result"] == "done"
    assert [(m["level"], m["data"]) for m in report["log"]["messages"]] == [
        ("warning", "hello log")]
    assert report["sample"] == "sampled:hi there"
    assert report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    assert report["server_requests"] == ["sampling/createMessage", "elicitation/create",
                                         "roots/list"]  # real requests, not input_required
    assert report["subscribe"] == ["memo://greeting"]
    assert report["cancel"] == "after cancel"
    sent = recorded(proxy.record)
    slow = next(m for m in sent if m.get("method") == "tools/call"
                and m["params"]["name"] == "slow")
    cancel = {"method": "notifications/cancelled", "params": {"requestId": slow["id"]}}
    # the call's own leg is cancelled on the child (a shared child's ids are the lane's)
    wait_until(lambda: any(m.get("method") == cancel["method"] and m["params"] ==
                           cancel["params"] for m in recorded(proxy.record)), timeout=5)
    assert slow["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert slow["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"] == "sdk-driver"
    assert methods(proxy.record).count("initialize") == 1  # refused once, then discovered
    assert status(proxy)["server_instances"]["default"]["era"] == "modern"
    proxy.expect("speaks only 2026-07-28: its 2025-era sessions are bridged")
    proxy.expect("bridging the client's 2025-era session to it")


def test_later_sessions_are_bridged_from_their_first_message(modern_proxy):
    proxy = modern_proxy()
    assert status(proxy)["server_instances"]["default"]["era"] == "unknown"
    for n in range(2):
        init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=15,
                             json=rpc("initialize", 0, **INIT_PARAMS))
        assert init.status_code == 200, init.text
        assert init.json()["result"]["protocolVersion"] == "2025-06-18"
        headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
        call = requests.post(proxy.base + "/mcp", headers=headers, timeout=15,
                             json=rpc("tools/call", 1, name="echo", arguments={"text": f"s{n}"}))
        answer = call.json() if call.headers["Content-Type"].startswith("application/json") \
            else json.loads(call.text.split("data: ", 1)[1])
        assert answer == {"jsonrpc": "2.0", "id": 1, "result": {  # no resultType
            "content": [{"type": "text", "text": f"s{n}"}], "isError": False,
            "structuredContent": {"result": f"s{n}"}, "_meta": answer["result"]["_meta"]}}
    assert methods(proxy.record).count("initialize") == 1  # the second child was never asked
    assert methods(proxy.record).count("server/discover") == 2
    shown = status(proxy)
    assert shown["server_instances"]["default"]["era"] == "modern"
    assert [s["child"]["bridge"] for s in shown["session_details"]] == [
        "2025 client -> 2026-07-28 server"] * 2


def test_stateless_requests_are_bridged_one_by_one(modern_proxy):
    proxy = modern_proxy("--stateless")
    for n, message in enumerate([rpc("tools/call", 1, name="echo", arguments={"text": "a"}),
                                 rpc("initialize", 2, **INIT_PARAMS),
                                 rpc("tools/call", 3, name="echo", arguments={"text": "b"})]):
        answer = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, json=message,
                               timeout=15)
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        if n == 1:
            assert result["serverInfo"] == {"name": "sdk-test-server", "version": "1.0.0"}
        else:
            assert result["content"][0]["text"] == message["params"]["arguments"]["text"]
            assert "resultType" not in result
    assert methods(proxy.record).count("initialize") == 1  # the shared process's, refused
    assert status(proxy)["server_instances"]["default"]["era"] == "modern"


def test_a_dual_era_child_is_not_bridged(proxy_factory):
    proxy = proxy_factory("--", *SDK_SERVER)
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=15,
                         json=rpc("initialize", 0, **INIT_PARAMS))
    assert init.json()["result"]["serverInfo"]["name"] == "sdk-test-server"
    shown = status(proxy)
    assert shown["server_instances"]["default"]["era"] == "legacy"
    assert "bridge" not in shown["session_details"][0]["child"]


# --- hostile children ---------------------------------------------------------------------

def initialize_over_sse(proxy):
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("initialize", 0, **{
        **INIT_PARAMS, "capabilities": {"roots": {}}}), timeout=10)
    return reader, endpoint, reader.next_message()


def test_a_discover_without_versions_leaves_the_refusal(modern_proxy):
    proxy = modern_proxy(child_flags=("--discover", "garbage"))
    reader, _, answer = initialize_over_sse(proxy)
    assert answer["id"] == 0 and answer["error"]["code"] == -32022  # the child's, unchanged
    assert "only 2026-07-28" in answer["error"]["message"]
    proxy.expect("server/discover found no 2026-07-28 server")
    assert status(proxy)["server_instances"]["default"]["era"] == "unknown"
    assert "Traceback" not in proxy.stderr()
    reader.close()


def test_a_discover_of_the_wrong_types_is_read_safely(modern_proxy):
    proxy = modern_proxy(child_flags=("--discover", "odd"))
    reader, _, answer = initialize_over_sse(proxy)
    assert answer["result"] == {"protocolVersion": "2025-06-18",
                                "capabilities": {"logging": {}},
                                "serverInfo": {"name": "server", "version": "unknown"}}
    assert "Traceback" not in proxy.stderr()
    reader.close()


HOSTILE_MODERN = """
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    rid, method = message.get("id"), message.get("method")
    if rid is None:
        continue
    if method == "initialize":
        out = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32022, "message": "2026 only",
               "data": {"supported": ["2026-07-28"]}}}
    elif method == "server/discover":
        out = {"jsonrpc": "2.0", "id": rid, "result": {"supportedVersions": ["2026-07-28"],
               "resultType": "complete", "capabilities": {"tools": {}}}}
    elif method == "tools/call" and message["params"]["name"] == "dup":
        sys.stdout.write('{"jsonrpc":"2.0","id":%s,"result":{"content":[],"content":[1]}}\\n'
                         % json.dumps(rid))
        sys.stdout.flush()
        continue
    elif method == "tools/call" and message["params"]["name"] == "die":
        sys.exit(4)
    else:
        continue
    sys.stdout.write(json.dumps(out) + "\\n")
    sys.stdout.flush()
"""


def test_a_hostile_child_answer_and_a_death_mid_call_each_end_the_request(proxy_factory,
                                                                          tmp_path):
    """The first leg's answer with a duplicate member is refused with a reason, under the
    client's id; a child that dies while a bridged call waits ends the call, never a hang."""
    child = tmp_path / "hostile_modern.py"
    child.write_text(HOSTILE_MODERN)
    proxy = proxy_factory("--keepalive", "60", "--", sys.executable, str(child))
    reader, endpoint, answer = initialize_over_sse(proxy)
    assert answer["id"] == 0 and answer["result"]["protocolVersion"] in LEGACY_VERSIONS
    requests.post(endpoint, json=rpc("tools/call", 5, name="dup", arguments={}), timeout=10)
    refused = reader.next_message()
    assert refused["id"] == 5 and refused["error"]["code"] == -32603, refused
    assert "duplicate member" in refused["error"]["message"]
    requests.post(endpoint, json=rpc("tools/call", 6, name="die", arguments={}), timeout=10)
    ended = reader.next_message()
    assert ended["id"] == 6 and ended["error"]["code"] == -32000, ended
    assert "server process exited with code 4" in ended["error"]["message"]
    assert "Traceback" not in proxy.stderr()
    reader.close()


def test_endless_input_rounds_end_after_ten(modern_proxy):
    proxy = modern_proxy(child_flags=("--endless",))
    reader, endpoint, _ = initialize_over_sse(proxy)
    requests.post(endpoint, json=rpc("tools/call", 7, name="endless", arguments={}),
                  timeout=10)
    for _ in range(10):
        ask = reader.next_message()
        assert ask["method"] == "roots/list" and ask["id"].startswith("mcp-proxy-in-")
        requests.post(endpoint, json={"jsonrpc": "2.0", "id": ask["id"],
                                      "result": {"roots": []}}, timeout=10)
    answer = reader.next_message()
    assert answer["id"] == 7 and answer["error"]["code"] == -32603
    assert answer["error"]["message"] == ("the server asked for input more than 10 times for "
                                          "one tools/call; mcp-proxy gave up")
    calls = [m for m in recorded(proxy.record) if m.get("method") == "tools/call"]
    assert len(calls) == 11 and all(m["params"].get("requestState") == "again"
                                    for m in calls[1:])
    reader.close()


def test_an_undeclared_capability_is_refused_without_asking(modern_proxy):
    proxy = modern_proxy()
    reader, endpoint, _ = initialize_over_sse(proxy)  # declares roots only
    requests.post(endpoint, json=rpc("tools/call", 3, name="sample",
                                     arguments={"prompt": "x"}), timeout=10)
    answer = reader.next_message()
    assert answer["id"] == 3 and answer["error"]["code"] == -32021
    reader.close()


# --- the shared face, on any discover answer ------------------------------------------------

class Scripted(LegacyFace):
    """A face whose peer answers ``server/discover`` with a given result at once."""

    peer = "server"

    def __init__(self, discovered) -> None:
        super().__init__("test")
        self.discovered_answer = discovered

    def send_peer(self, message: Message, here: bool = False) -> None:
        if message.method == "server/discover":
            self.consumes(Message({"jsonrpc": "2.0", "id": message.id,
                                   "result": self.discovered_answer}))

    def stop_peer(self, leg_id: str) -> None:
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
DISCOVERED = st.fixed_dictionaries({}, optional={
    "supportedVersions": st.one_of(JSON, st.lists(st.sampled_from(
        ["2026-07-28", "2025-11-25", "2027-01-01", ""]), max_size=3)),
    "capabilities": JSON, "serverInfo": JSON, "instructions": JSON,
    "_meta": st.one_of(JSON, st.fixed_dictionaries({
        "io.modelcontextprotocol/serverInfo": JSON}))})


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(discovered=DISCOVERED, params=st.one_of(JSON, st.just(INIT_PARAMS)))
def test_any_discover_result_gives_one_well_formed_answer(discovered, params):
    face = Scripted(discovered)
    got = AsyncResult()
    face.attach(got.set, lambda: None)
    bridged = face.discover(Message({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                     "params": params}), None)
    answer = got.get(timeout=1).obj
    face.close("done")
    assert answer["id"] == 0
    if bridged:
        result = answer["result"]
        assert result["protocolVersion"] in LEGACY_VERSIONS
        assert isinstance(result["capabilities"], dict) and "logging" in result["capabilities"]
        assert isinstance(result["serverInfo"], dict)
        assert isinstance(result.get("instructions", ""), str)
        json.dumps(answer)
    else:
        assert answer["error"]["code"] == -32603
        assert "server/discover" in answer["error"]["message"]
