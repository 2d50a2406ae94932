"""The 2026-07-28 era on /mcp: the official SDK pinned to it, raw requests for the edge cases.

The child is the SDK fixture server (which speaks both eras) for the feature run, and
raw_server with ``--record`` where the test must see exactly what reached the child.
"""

from __future__ import annotations

import base64
import json
import socket
import threading

import pytest
import requests
from test_lifecycle import wait_until
from test_shared import methods, recorded

from conftest import INIT_PARAMS, RAW_SERVER, SDK_SERVER, STREAM_HEADERS, rpc, run_driver
from mcp_proxy.children import request_state
from mcp_proxy.children.lane import ModernLane
from mcp_proxy.children.request_state import unwrap_state, wrap_state
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import SpawnError

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"}}


def modern(method: str, request_id=1, **params) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {**params, "_meta": {**META, **params.pop("_meta", {})}}}


def headers_for(message: dict, **extra: str) -> dict:
    headers = {**STREAM_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": message["method"]}
    name = message["params"].get("name") or message["params"].get("uri")
    if name is not None:
        headers["Mcp-Name"] = name
    return {**headers, **extra}


def post(base: str, message: dict, **extra: str) -> requests.Response:
    return requests.post(base + "/mcp", json=message, headers=headers_for(message, **extra),
                         timeout=15)


def events(response: requests.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ")]


@pytest.fixture
def raw(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--keepalive", "60", "--", *RAW_SERVER, "--record", str(record))
    proxy.record = record
    return proxy


def test_every_feature_with_the_sdk_in_the_modern_era(proxy_factory):
    proxy = proxy_factory("--", *SDK_SERVER)
    report = run_driver("streamable", proxy.base + "/mcp", "tools", "echo", "unicode",
                        "progress", "set_level", "log", "sample", "elicit", "roots", "fail",
                        "resources", "prompts", "unknown_method", "concurrent",
                        extra=("--mode", MODERN))
    assert report["session"]["protocolVersion"] == MODERN
    assert report["echo"] == "hello" and report["unicode"] == "héllo ✓ 日本"
    assert report["progress"]["values"] == [1, 2, 3]
    assert report["sample"] == "sampled:hi there"  # input_required, answered, retried
    assert report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    assert report["unknown_method"]["code"] == -32601
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert report["resources"] == {"listed": ["memo://greeting"],
                                   "text": "hello from a resource"}  # Mcp-Name: the uri
    assert report["prompts"] == {"listed": ["greet"], "text": "Please greet octocat."}
    assert [(m["level"], m["data"]) for m in report["log"]["messages"]] == [
        ("warning", "hello log")]  # its request asked for log lines (set_level)


def test_a_legacy_client_side_by_side(proxy_factory):
    proxy = proxy_factory("--", *SDK_SERVER)
    assert run_driver("streamable", proxy.base + "/mcp", "echo",
                      extra=("--mode", MODERN))["echo"] == "hello"
    legacy = run_driver("streamable", proxy.base + "/mcp", "echo", "sample")
    assert (legacy["echo"], legacy["sample"]) == ("hello", "sampled:hi there")
    status = requests.get(proxy.base + "/status", timeout=10).json()
    assert status["children_started"] == 2  # the legacy session's own, and the modern lane's


def test_two_callers_with_the_same_ids_and_tokens(raw):
    answers: dict = {}

    def call(who: str) -> None:
        message = modern("tools/call", 1, name="progress", arguments={"steps": 2},
                         _meta={"progressToken": "p"})
        answers[who] = events(post(raw.base, message))

    threads = [threading.Thread(target=call, args=(who,)) for who in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for who in "ab":
        progress, final = answers[who][:-1], answers[who][-1]
        assert [m["params"] for m in progress] == [{"progressToken": "p", "progress": 1},
                                                   {"progressToken": "p", "progress": 2}]
        assert final["id"] == 1 and final["result"]["content"][0]["text"] == "done"
    sent = [m for m in recorded(raw.record) if m.get("method") == "tools/call"]
    assert len({m["id"] for m in sent}) == 2
    assert "server/discover" == recorded(raw.record)[0]["method"]  # the child's first frame


def leave_a_held_call(proxy) -> None:
    """POST a call the server never answers, close the connection before the first byte of
    the answer (the proxy pings only every 60 s), and see the call cancelled on the child."""
    message = modern("tools/call", 5, name="hold", arguments={})
    host, port = proxy.base.rsplit("/", 1)[1].rsplit(":", 1)
    body = json.dumps(message).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(message).items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: "tools/call" in methods(proxy.record))
    wait_until(lambda: "notifications/cancelled" in methods(proxy.record), timeout=5)
    call = next(m for m in recorded(proxy.record) if m.get("method") == "tools/call")
    cancel = next(m for m in recorded(proxy.record)
                  if m.get("method") == "notifications/cancelled")
    assert cancel["params"]["requestId"] == call["id"]


def test_a_closed_stream_cancels_the_call_on_the_child(raw):
    leave_a_held_call(raw)


def test_listen_streams_get_list_changed_with_their_own_id(raw):
    listen = modern("subscriptions/listen", "L1", filter={"toolsListChanged": True})
    stream = requests.post(raw.base + "/mcp", json=listen, headers=headers_for(listen),
                           stream=True, timeout=15)
    lines = stream.iter_lines()

    def next_event() -> dict:
        for line in lines:
            if line.startswith(b"data: "):
                return json.loads(line[6:])
        raise AssertionError("the listen stream ended")

    ack = next_event()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
    assert post(raw.base, modern("tools/call", 2, name="change", arguments={})).ok
    changed = next_event()
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
    stream.close()
    wait_until(lambda: "notifications/cancelled" in methods(raw.record), timeout=5)


@pytest.mark.parametrize("change, code", [
    ({"MCP-Protocol-Version": "2026-01-01"}, -32020),
    ({"Mcp-Method": "tools/list"}, -32020),
    ({"Mcp-Name": "other"}, -32020),
    ({"Mcp-Param-Region": "mars"}, -32020),
    ({"Mcp-Param-Region": None}, -32020),
])
def test_headers_must_match_the_body(raw, change, code):
    message = modern("tools/call", 3, name="tagged", arguments={"region": "earth"})
    headers = {**headers_for(message, **{"Mcp-Param-Region": "earth"}), **change}
    headers = {k: v for k, v in headers.items() if v is not None}
    refused = requests.post(raw.base + "/mcp", json=message, headers=headers, timeout=15)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == code
    assert "tools/call" not in methods(raw.record)  # the child never saw it


def test_nested_and_invalid_header_annotations(raw):
    nested = modern("tools/call", 1, name="nested", arguments={"place": {"region": "moon"}})
    assert post(raw.base, nested, **{"Mcp-Param-Zone": "moon"}).status_code == 200
    for wrong in ({"Mcp-Param-Zone": "mars"}, {}):
        refused = post(raw.base, nested, **wrong)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32020
    miscast = modern("tools/call", 2, name="miscast", arguments={"ratio": 0.5})
    refused = post(raw.base, miscast, **{"Mcp-Param-Ratio": "0.5"})
    assert refused.status_code == 400 and "invalid" in refused.json()["error"]["message"]
    assert [m["params"]["name"] for m in recorded(raw.record)
            if m.get("method") == "tools/call"] == ["nested"]


def test_matching_headers_pass_also_base64_encoded(raw):
    message = modern("tools/call", 3, name="tagged", arguments={"region": "Zürich"})
    encoded = "=?base64?" + base64.b64encode("Zürich".encode()).decode() + "?="
    answer = post(raw.base, message, **{"Mcp-Param-Region": encoded})
    assert answer.json()["result"]["content"][0]["text"] == "Zürich"
    envelope_missing = rpc("tools/list", 4)
    refused = requests.post(raw.base + "/mcp", json=envelope_missing, timeout=15, headers={
        **STREAM_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32602
    for method in ("GET", "DELETE"):
        no = requests.request(method, raw.base + "/mcp", timeout=10,
                              headers={**STREAM_HEADERS, "MCP-Protocol-Version": MODERN})
        assert no.status_code == 405 and no.headers["Allow"] == "POST"
    unknown = post(raw.base, modern("no/such", 5))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == -32601


def test_unknown_tools_cost_one_listing_until_list_changed(raw):
    def listings() -> int:
        return methods(raw.record).count("tools/list")

    for n, name in enumerate(("nope", "nope", "made-up")):
        unknown = post(raw.base, modern("tools/call", n, name=name, arguments={}))
        assert "Unknown tool" in unknown.json()["error"]["message"]  # the child's answer
    assert listings() == 1
    listen = modern("subscriptions/listen", "L", filter={"toolsListChanged": True})
    stream = requests.post(raw.base + "/mcp", json=listen, headers=headers_for(listen),
                           stream=True, timeout=15)
    seen = (json.loads(line[6:]) for line in stream.iter_lines() if line.startswith(b"data: "))
    assert next(seen)["method"] == "notifications/subscriptions/acknowledged"
    assert post(raw.base, modern("tools/call", 5, name="change", arguments={})).ok
    assert next(seen)["method"] == "notifications/tools/list_changed"
    post(raw.base, modern("tools/call", 6, name="nope", arguments={}))
    assert listings() == 2  # the tools may have changed: listed again
    stream.close()


def test_a_call_whose_headers_cannot_be_checked_is_refused(raw, proxy_factory, tmp_path):
    record = tmp_path / "failing.jsonl"
    failing = proxy_factory("--", *RAW_SERVER, "--fail-list", "--record", str(record))
    call = modern("tools/call", 1, name="tagged", arguments={"region": "earth"})
    refused = post(failing.base, call, **{"Mcp-Param-Region": "earth"})
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert error["code"] == -32603 and "tools/list failed: " in error["message"], error
    assert "tools/call" not in methods(record)  # unchecked: it never reached the child
    again = post(failing.base, call, **{"Mcp-Param-Region": "earth"})  # within 5 s: the
    assert again.status_code == 502 and again.json()["error"] == error  # same failure,
    assert methods(record).count("tools/list") == 1  # not another listing each
    odd = modern("tools/call", 2, name="tagged", arguments="region")
    refused = post(raw.base, odd, **{"Mcp-Param-Region": "region"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32602
    undecodable = modern("tools/call", 3, name="tagged", arguments={})
    refused = post(raw.base, undecodable, **{"Mcp-Param-Region": "=?base64?%%%?="})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32020
    assert "tools/call" not in methods(raw.record)


def test_a_legacy_only_child_is_bridged_and_still_serves_initialize(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--", *RAW_SERVER, "--legacy-only", "--record", str(record))
    listed = post(proxy.base, modern("tools/list", 1))
    assert listed.status_code == 200, listed.text
    result = listed.json()["result"]
    assert result["resultType"] == "complete" and result["tools"][0]["name"] == "echo"
    sent = recorded(record)
    assert [m.get("method") for m in sent][:3] == ["server/discover", "initialize",
                                                   "notifications/initialized"]
    # the probe is the only modern frame: the bridged child gets 2025-era requests
    assert not any("io.modelcontextprotocol/protocolVersion" in json.dumps(m)
                   for m in sent[1:])
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 1, **INIT_PARAMS))
    assert init.status_code == 200 and "Mcp-Session-Id" in init.headers


def test_a_dual_era_sdk_client_is_served_by_the_bridge(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--legacy-only")
    report = run_driver("streamable", proxy.base + "/mcp", "echo", extra=("--mode", "auto"))
    assert report["echo"] == "hello"
    assert report["session"]["protocolVersion"] == MODERN  # server/discover answered


def test_a_large_input_required_round_keeps_its_request_state(raw):
    """Large messages keep only a routing view: the state still finds its way both ways."""
    pad = "p" * 100_000
    call = modern("tools/call", 1, name="mrtr", arguments={"pad": pad})
    first = post(raw.base, call).json()["result"]
    assert first["pad"] == pad and first["requestState"].startswith("mcp-proxy:")
    call["params"]["requestState"] = first["requestState"]
    call["id"] = 2
    host, port = raw.base.rsplit("/", 1)[1].rsplit(":", 1)
    body = json.dumps(call).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(call).items())

    def retried() -> dict | None:
        sent = [m for m in recorded(raw.record) if m.get("params", {}).get("requestState")]
        return sent[0] if sent else None
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # the child holds
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"  # a retry
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        sent = wait_until(retried, 10)
    assert sent["params"]["requestState"] == "mrtr-1"  # unwrapped on the way in
    assert sent["params"]["arguments"]["pad"] == pad


def test_request_state_handles_are_bound_to_their_child_and_caller():
    handle = wrap_state("sealed", 3, "alice")
    assert unwrap_state(handle, 3) == ("alice", "sealed")
    assert unwrap_state(handle, 4) is None  # the child was restarted
    assert unwrap_state(handle[:-2] + "xx", 3) is None  # tampered
    assert unwrap_state("sealed", 3) is None  # never ours
    lane = ModernLane("m", spawn=None)
    for_alice = lane._seal("a", "alice")
    assert lane._unseal(for_alice, "bob")[:2] == (False, "a")  # another caller's
    assert lane._unseal(for_alice, "")[:2] == (False, "a")  # nor one without credentials
    assert lane._unseal(for_alice, "alice")[:2] == (True, "a")
    assert lane._unseal(for_alice, "alice")[:2] == (True, "a")  # its caller may retry again
    anonymous = lane._seal("b", "")
    assert lane._unseal(anonymous, "alice")[0] is False
    assert lane._unseal(anonymous, "")[:2] == (True, "b")
    assert lane._unseal(anonymous, "")[0] is False  # spent: nobody can replay it


def test_an_anonymous_handle_survives_a_retry_that_was_not_sent():
    """A retry answered "server unavailable" (nothing reached the server) may be made again
    with the same one-time handle: it was not spent."""
    def no_server():
        raise SpawnError("no server here")

    lane = ModernLane("m", spawn=no_server)
    port = lane.port("p")
    handle = lane._seal("b", "")
    retry = Message({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": "x", "arguments": {}, "requestState": handle}})
    lane.route(port, retry)
    answer = next(iter(port))
    assert answer.id == 1 and answer.error["code"] == -32603, answer
    assert lane._unseal(handle, "")[:2] == (True, "b")  # not spent by the failed retry
    assert lane._unseal(handle, "")[0] is False  # but spent once used


def test_request_state_handles_expire(monkeypatch):
    assert request_state.STATE_TTL == 600  # as the official SDK's own sealed state
    monkeypatch.setattr(request_state, "STATE_TTL", -1.0)
    lane = ModernLane("m", spawn=None)
    assert unwrap_state(wrap_state("sealed", 3, "alice"), 3) is None
    assert lane._unseal(lane._seal("a", "alice"), "alice")[0] is False
    assert lane._unseal(lane._seal("b", ""), "")[0] is False
    lane._seal("c", "")
    assert len(lane.unspent) == 1  # expired nonces go as new ones come


def test_an_anonymous_handle_is_good_for_one_retry(raw):
    first = post(raw.base, modern("tools/call", 1, name="mrtr", arguments={})).json()["result"]
    retry = modern("tools/call", 2, name="mrtr", arguments={},
                   requestState=first["requestState"])
    host, port = raw.base.rsplit("/", 1)[1].rsplit(":", 1)
    body = json.dumps(retry).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(retry).items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # the child holds it
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: any(m.get("params", {}).get("requestState")
                               for m in recorded(raw.record)))
    retry["id"] = 3
    replayed = post(raw.base, retry)  # the same handle again, by anyone
    assert replayed.status_code == 400
    assert replayed.json()["error"] == {"code": -32602,
                                        "message": "Invalid or expired requestState"}
    assert len([m for m in recorded(raw.record) if m.get("params", {}).get("requestState")]) == 1


def test_a_caller_that_reads_nothing_is_cut_after_the_stall_timeout(proxy_factory):
    proxy = proxy_factory("--stall-timeout", "2", "--keepalive", "60", "--", *RAW_SERVER,
                          "--huge-line", str(12 << 20))
    # it asks for log lines, so the 12 MiB one comes first, on its own stream
    message = modern("tools/call", 1, name="echo", arguments={"text": "x"},
                     _meta={"io.modelcontextprotocol/logLevel": "debug"})
    host, port = proxy.base.rsplit("/", 1)[1].rsplit(":", 1)
    body = json.dumps(message).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(message).items())
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert b"text/event-stream" in answer  # then it reads nothing more
        proxy.expect(r"modern:\d+: the client took nothing for 2 s", timeout=20)
    after = post(proxy.base, modern("tools/list", 2))  # the lane serves on
    assert after.status_code == 200 and after.json()["result"]["tools"]
