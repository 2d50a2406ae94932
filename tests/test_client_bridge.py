"""Client mode, a 2026-07-28 desktop client in front of a 2025-era remote (issue 25).

The desktop client is the official SDK 2.x in ``modern`` mode (its own process, through
``mcp-proxy URL`` on stdio) or a raw JSON-lines client; the remote is the SDK fixture server
narrowed to the 2025 era (Streamable HTTP or SSE), or our own server mode in front of
``raw_server --legacy-only``, which records what reached it.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_client_modern import MODERN, SUBSCRIPTION, modern, sdk_remote, served  # noqa: F401 (fixtures)
from test_lifecycle import wait_until
from test_shared import methods, recorded

from conftest import RAW_SERVER, ProxyProcess, rpc, run_driver
from mcp_proxy.client.legacy_remote import is_modern, meta_problem
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link

PROXY = shlex.join([sys.executable, "-m", "mcp_proxy"])
FEATURES = ("tools", "echo", "unicode", "progress", "log", "sample", "elicit", "roots",
            "fail", "unknown_method", "concurrent", "cancel")
BRIDGED = "bridge modern->legacy: a 2026-07-28 desktop client in front of a 2025-era remote (%s)"
ASKING = {"io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
          "io.modelcontextprotocol/clientInfo": {"name": "bridge-test", "version": "7"}}


def test_peek_leaves_the_first_message_for_the_bridge():
    link = Link("peeked")
    message = Message(modern("tools/list", 1))
    link.deliver(message)
    assert link.peek() is message and link.peek() is message
    assert is_modern(message) and not is_modern(Message(rpc("tools/list", 1)))
    got = []
    link.attach(got.append, lambda: None)
    assert got == [message]
    closed = Link("closed")
    closed.close("gone")
    assert closed.peek() is None


@pytest.mark.parametrize("meta, problem", [
    ({}, None), ({"progressToken": "t", "other": [1]}, None),
    ([], "_meta must be an object"),
    ({"io.modelcontextprotocol/protocolVersion": 1}, "must be a string"),
    ({"io.modelcontextprotocol/clientInfo": "me"}, "must be an object"),
    ({"io.modelcontextprotocol/logLevel": "DEBUG"}, "must be one of"),
])
def test_meta_problems(meta, problem):
    found = meta_problem(Message({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                                  "params": {"_meta": meta}}))
    assert found == problem if problem is None else problem in found


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_the_sdk_in_the_modern_era_through_the_client_bridge(sdk_remote, transport):  # noqa: F811
    """--transport auto: Streamable HTTP, or SSE after the remote refused the probe."""
    report = run_driver("stdio", f"{PROXY} {sdk_remote('legacy', transport)}", *FEATURES,
                        extra=("--mode", MODERN))
    assert report["session"]["protocolVersion"] == MODERN, report
    assert {"echo", "progress", "sample", "slow"} <= set(report["tools"])
    assert report["echo"] == "hello" and report["unicode"] == "héllo ✓ 日本"
    assert report["progress"]["values"] == [1, 2, 3]
    assert report["log"]["result"] == "logged"  # the request's logLevel: logging/setLevel
    assert [m["data"] for m in report["log"]["messages"]] == ["hello log"]
    # the remote's own requests: input_required rounds, retried on the same legacy request
    assert report["sample"] == "sampled:hi there" and report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    assert report["fail"]["isError"] is True
    assert report["unknown_method"]["code"] == -32601
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert report["cancel"] == "after cancel"


def test_a_modern_remote_is_relayed_and_said_so(sdk_remote, clients):  # noqa: F811
    client = clients(sdk_remote("modern"))
    listed = client.call(modern("tools/list", 1))
    assert listed["result"]["resultType"] == "complete" and listed["result"]["tools"]
    client.wait_stderr("a 2026-07-28 remote: relayed")
    assert "bridge modern->legacy" not in client.stderr()


@pytest.fixture
def bridged(served, clients):  # noqa: F811
    """A raw stdio client through the bridge to server mode's /sse (the 2025 era's own
    transport), in front of raw_server (``.remote.record``: what that server was sent)."""
    remote = served("--legacy-only", "--changes")
    client = clients("--transport", "sse", remote.base + "/sse")
    client.remote = remote
    return client


def test_discover_initializes_the_remote_from_meta_and_one_line_says_so(bridged):
    found = bridged.call(modern("server/discover", 1, _meta=ASKING))
    assert found["result"]["supportedVersions"] == [MODERN]
    assert found["result"]["resultType"] == "complete"
    assert found["result"]["capabilities"]["tools"] == {"listChanged": True}
    listed = bridged.call(modern("tools/list", 2))
    assert listed["result"]["resultType"] == "complete" and listed["result"]["ttlMs"] == 0
    init = next(m for m in recorded(bridged.remote.record) if m.get("method") == "initialize")
    assert init["params"]["clientInfo"] == {"name": "bridge-test", "version": "7"}
    assert init["params"]["capabilities"] == {"sampling": {}}
    assert "server/discover" not in methods(bridged.remote.record)  # SSE: never probed
    assert bridged.stderr().count(BRIDGED % "SSE") == 1


def test_a_stdio_cancel_reaches_the_remote(bridged):
    bridged.send(modern("tools/call", 7, name="hold", arguments={}))
    wait_until(lambda: "tools/call" in methods(bridged.remote.record))
    bridged.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": 7}})
    wait_until(lambda: "notifications/cancelled" in methods(bridged.remote.record), timeout=5)
    held = next(m for m in recorded(bridged.remote.record) if m.get("method") == "tools/call")
    cancel = next(m for m in recorded(bridged.remote.record)
                  if m.get("method") == "notifications/cancelled")
    assert cancel["params"]["requestId"] == held["id"]
    answer = bridged.call(modern("tools/call", 8, name="echo", arguments={"text": "next"}))
    assert answer["id"] == 8 and answer["result"]["content"][0]["text"] == "next"


def test_listen_gets_list_changed_and_resources_updated(bridged):
    bridged.send(modern("subscriptions/listen", "L1", notifications={
        "toolsListChanged": True, "resourceSubscriptions": ["memo://a"]}))
    ack = bridged.recv()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"toolsListChanged": True,
                                              "resourceSubscriptions": ["memo://a"]}
    wait_until(lambda: "resources/subscribe" in methods(bridged.remote.record))
    got = [bridged.call(modern("tools/call", 2, name="update", arguments={"uri": "memo://a"})),
           bridged.recv()]
    updated = next(m for m in got if m.get("method") == "notifications/resources/updated")
    assert updated["params"]["uri"] == "memo://a"
    assert updated["params"]["_meta"][SUBSCRIPTION] == "L1"
    got = [bridged.call(modern("tools/call", 3, name="change", arguments={})), bridged.recv()]
    changed = next(m for m in got if m.get("method") == "notifications/tools/list_changed")
    assert changed["params"]["_meta"][SUBSCRIPTION] == "L1"
    bridged.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": "L1"}})  # the listen ends: the remote lets go
    wait_until(lambda: "resources/unsubscribe" in methods(bridged.remote.record), timeout=5)


def ask_round(client, request_id) -> dict:
    answer = client.call(modern("tools/call", request_id, name="ask", arguments={},
                                _meta=ASKING))
    assert answer["result"]["resultType"] == "input_required", answer
    return answer["result"]


def test_a_round_resumes_once_and_forged_or_replayed_states_are_refused(bridged):
    first = ask_round(bridged, 1)
    sampling = first["inputRequests"]["input-1"]
    assert sampling["method"] == "sampling/createMessage"
    forged = bridged.call(modern("tools/call", 2, name="ask", arguments={},
                                 requestState="mcp-proxy:e30=.forged",
                                 inputResponses={"input-1": {}}))
    assert forged["error"]["code"] == -32602 and "requestState" in forged["error"]["message"]
    reply = {"role": "assistant", "content": {"type": "text", "text": "yes"}, "model": "m"}
    retry = modern("tools/call", 3, name="ask", arguments={}, _meta=ASKING,
                   requestState=first["requestState"], inputResponses={"input-1": reply})
    done = bridged.call(retry)
    assert done["result"]["resultType"] == "complete"
    assert json.loads(done["result"]["content"][0]["text"])["model"] == "m"
    replayed = bridged.call({**retry, "id": 4})
    assert replayed["error"]["code"] == -32602  # used: its round is over
    assert methods(bridged.remote.record).count("tools/call") == 1  # one legacy request


@pytest.mark.parametrize("meta, why", [
    ("junk", "_meta must be an object"),
    ({"io.modelcontextprotocol/clientCapabilities": []}, "must be an object"),
    ({"io.modelcontextprotocol/logLevel": "loud"}, "must be one of debug"),
])
def test_malformed_meta_gets_a_clear_error(bridged, meta, why):
    bridged.call(modern("server/discover", 0))  # a 2026-07-28 client: bridged from here on
    message = modern("tools/list", 1)
    message["params"]["_meta"] = meta if isinstance(meta, str) else {
        **message["params"]["_meta"], **meta}
    answer = bridged.call(message)
    assert answer["error"]["code"] == -32602 and why in answer["error"]["message"]
    assert bridged.call(modern("tools/list", 2))["result"]["tools"]  # nothing broke
    assert "Traceback" not in bridged.stderr()


def test_an_id_in_flight_is_not_taken_twice(bridged):
    bridged.send(modern("tools/call", 5, name="hold", arguments={}))
    again = bridged.call(modern("tools/call", 5, name="echo", arguments={"text": "x"}))
    assert again["error"]["code"] == -32600 and "in flight" in again["error"]["message"]


JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def test_hostile_requests_never_break_the_bridge(bridged):
    bridged.call(modern("server/discover", 0))
    ids = iter(range(1, 10**6))

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(meta=st.dictionaries(st.sampled_from([
        "io.modelcontextprotocol/clientCapabilities", "io.modelcontextprotocol/logLevel",
        "io.modelcontextprotocol/clientInfo", "progressToken", "other"]), JUNK, max_size=3),
        state=JUNK, method=st.sampled_from(["tools/call", "tools/list", "resources/read"]))
    def hostile(meta, state, method):
        request_id = next(ids)
        message = modern(method, request_id, name="echo", arguments={"text": "t"},
                         requestState=state, _meta=meta)
        answer = bridged.call(message, timeout=20)
        if answer["id"] is None:  # refused as stdin is read (e.g. a junk progressToken)
            assert answer["error"]["code"] == -32600
        else:
            assert answer["id"] == request_id and ("result" in answer or "error" in answer)

    hostile()
    assert bridged.call(modern("tools/list", 0))["result"]["tools"]
    assert "Traceback" not in bridged.stderr()


def test_a_remote_that_drops_mid_call_is_recovered(clients, tmp_path):
    record = tmp_path / "sent.jsonl"
    remote = ProxyProcess("--", *RAW_SERVER, "--legacy-only", "--record", str(record),
                          "--slow", "0.5").started()
    port = remote.base.rsplit(":", 1)[1]
    client = clients("--transport", "sse", remote.base + "/sse")
    try:
        assert client.call(modern("tools/list", 1))["result"]["tools"]
        client.send(modern("tools/call", 2, name="echo", arguments={"text": "lost"}))
        wait_until(lambda: "tools/call" in methods(record))  # in flight when it goes away
        remote.stop()
        answer = client.recv(timeout=10)
        assert answer["id"] == 2 and "error" in answer
        remote = ProxyProcess("--port", port, "--", *RAW_SERVER, "--legacy-only").started()
        client.wait_stderr("re-initialized", timeout=30)
        answer = client.call(modern("tools/call", 3, name="echo", arguments={"text": "back"}),
                             timeout=30)
        assert answer["result"]["content"][0]["text"] == "back"
        assert answer["result"]["resultType"] == "complete"
    finally:
        remote.stop()
