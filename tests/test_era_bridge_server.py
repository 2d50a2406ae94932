"""Server mode, a 2026-07-28 client in front of a 2025-era server process (issue 25).

The legacy-only fixture is the official SDK's stdio server behind ``legacy_only.py`` (which
refuses every 2026-07-28 frame, as a server of the 2025 era does), or raw_server with
``--legacy-only --record`` where the test must see what reached the child.
"""

from __future__ import annotations

import hashlib
import json
import sys

import mcp_types._v2026_07_28 as schema
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_inspector import everything, inspector_cli, run_inspector  # noqa: F401 (fixtures)
from test_lifecycle import wait_until
from test_modern import MODERN, events, leave_a_held_call, modern, post
from test_shared import methods, recorded

from conftest import RAW_SERVER, SDK_SERVER, SERVERS, run_driver
from mcp_proxy.children import legacy_bridge

LEGACY_SDK = [sys.executable, str(SERVERS / "legacy_only.py"), *SDK_SERVER]


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
def test_the_sdk_in_the_modern_era_through_the_bridge(proxy_factory, shared):
    proxy = proxy_factory(*(["--shared-child"] if shared else []), "--", *LEGACY_SDK)
    rounds = () if shared else ("sample", "elicit", "roots")
    report = run_driver("streamable", proxy.base + "/mcp", "tools", "echo", "unicode",
                        "progress", "fail", "unknown_method", "concurrent", *rounds,
                        extra=("--mode", MODERN))
    assert report["session"]["protocolVersion"] == MODERN, report
    assert report["echo"] == "hello" and report["unicode"] == "héllo ✓ 日本"
    assert report["progress"]["values"] == [1, 2, 3]
    assert report["fail"]["isError"] is True
    assert report["unknown_method"]["code"] == -32601
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert "echo" in report["tools"]
    if not shared:  # input_required, answered, retried on the same legacy request
        assert report["sample"] == "sampled:hi there"
        assert report["elicit"] == "accept:octocat"
        assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    status = requests.get(proxy.base + "/status", timeout=5).json()
    lane = status["server_instances"]["default"]["modern_lane"]
    assert lane["legacy_only"] is True and lane["bridge"] == "modern->legacy"
    assert lane["bridged_children"] >= 1  # more while rounds of concurrent calls are out
    assert sum("bridge modern->legacy" in line for line in proxy.lines) == 1


@pytest.fixture
def legacy(proxy_factory, tmp_path):
    """A proxy in front of raw_server --legacy-only, which records what it was sent."""
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--keepalive", "60", "--", *RAW_SERVER, "--legacy-only", "--record",
                          str(record))
    proxy.record = record
    return proxy


def after_probe(record) -> list[dict]:
    sent = recorded(record)
    assert sent[0]["method"] == "server/discover"  # the era probe's child, stopped since
    return sent[1:]


def test_discover_and_answers_match_the_2026_schema(legacy):
    meta = {"io.modelcontextprotocol/clientCapabilities": {
        "sampling": {}, "elicitation": {}, "roots": {}, "experimental": {"x": {}}},
        "io.modelcontextprotocol/clientInfo": {"name": "schema-test", "version": "9"}}
    found = post(legacy.base, modern("server/discover", 1, _meta=meta))
    assert found.status_code == 200, found.text
    discover = found.json()["result"]
    schema.DiscoverResult.model_validate(discover)
    assert discover["supportedVersions"] == [MODERN]
    assert discover["capabilities"] == {"tools": {}, "logging": {}}
    assert discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "raw_server"
    listed = post(legacy.base, modern("tools/list", 2, _meta=meta)).json()["result"]
    schema.ListToolsResult.model_validate(listed)
    assert listed["cacheScope"] == "private" and listed["ttlMs"] == 0
    called = post(legacy.base, modern("tools/call", 3, name="echo", arguments={"text": "hi"},
                                      _meta=meta)).json()["result"]
    schema.CallToolResult.model_validate(called)
    assert called["content"][0]["text"] == "hi"
    init, initialized, *rest = after_probe(legacy.record)
    assert init["method"] == "initialize" and init["params"]["protocolVersion"] == "2025-11-25"
    # the client's identity and capabilities (a per-session server's child is its own)
    assert init["params"]["clientInfo"] == {"name": "schema-test", "version": "9"}
    assert init["params"]["capabilities"] == meta["io.modelcontextprotocol/clientCapabilities"]
    assert initialized["method"] == "notifications/initialized"
    assert [m["method"] for m in rest] == ["tools/list", "tools/call"]  # discover: from cache


def test_meta_is_applied_progress_kept_and_the_envelope_stripped(legacy):
    message = modern("tools/call", 7, name="progress", arguments={"steps": 2},
                     _meta={"progressToken": "tok", "traceparent": "00-abc-def-01",
                            "io.modelcontextprotocol/logLevel": "debug"})
    got = events(post(legacy.base, message))
    assert [m["params"] for m in got[:-1]] == [{"progressToken": "tok", "progress": 1},
                                               {"progressToken": "tok", "progress": 2}]
    assert got[-1]["id"] == 7 and got[-1]["result"]["resultType"] == "complete"
    sent = after_probe(legacy.record)
    level = next(m for m in sent if m.get("method") == "logging/setLevel")
    assert level["params"] == {"level": "debug"}
    call = next(m for m in sent if m.get("method") == "tools/call")
    assert set(call["params"]["_meta"]) == {"progressToken", "traceparent"}
    assert call["params"]["_meta"]["traceparent"] == "00-abc-def-01"


def test_a_closed_stream_cancels_the_bridged_call(legacy):
    leave_a_held_call(legacy)


def test_a_server_request_the_client_did_not_declare_gets_a_clear_error(legacy):
    message = modern("tools/call", 2, name="ask", arguments={})
    answer = post(legacy.base, message).json()
    text = answer["result"]["content"][0]["text"]
    assert ("sampling/createMessage cannot be put to the 2026-07-28 client: the client did "
            "not declare sampling, elicitation or roots") in text, text


def children(proxy) -> int:
    status = requests.get(proxy.base + "/status", timeout=5).json()
    return status["server_instances"]["default"]["modern_lane"]["bridged_children"]


def test_one_child_per_principal_and_fingerprint_reaped_when_idle(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--", *RAW_SERVER, "--legacy-only", "--record", str(record),
                          env={"MCP_PROXY_BRIDGE_IDLE": "5"})
    plain = modern("tools/list", 1)
    other_caps = modern("tools/list", 1, _meta={
        "io.modelcontextprotocol/clientCapabilities": {"experimental": {"y": {}}}})
    for message, auth in ((plain, None), (plain, None), (plain, "Bearer alice"),
                          (plain, "Bearer bob"), (other_caps, "Bearer bob"),
                          (other_caps, "Bearer bob")):
        extra = {"Authorization": auth} if auth else {}
        assert post(proxy.base, message, **extra).status_code == 200
    # anonymous, alice, bob, bob with other capabilities
    assert methods(record).count("initialize") == 4
    wait_until(lambda: children(proxy) == 0, timeout=20)
    wait_until(lambda: sum("stopped, unused for" in line for line in proxy.lines) == 4)
    assert post(proxy.base, plain).status_code == 200  # started again when needed
    assert methods(record).count("initialize") == 5


def test_a_shared_server_has_one_bridged_child_for_every_caller(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--stateless", "--", *RAW_SERVER, "--legacy-only", "--record",
                          str(record))
    for auth in ("Bearer alice", "Bearer bob"):
        message = modern("tools/list", 1, _meta={
            "io.modelcontextprotocol/clientCapabilities": {"experimental": {auth: {}}}})
        assert post(proxy.base, message, Authorization=auth).status_code == 200
    assert children(proxy) == 1 and methods(record).count("initialize") == 1


JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def test_hostile_meta_gets_answers_never_a_traceback(proxy_factory):
    proxy = proxy_factory("--stateless", "--", *RAW_SERVER, "--legacy-only")

    @settings(max_examples=60, deadline=None, database=None)
    @given(caps=JUNK, info=JUNK, level=JUNK, token=JUNK,
           method=st.sampled_from(["tools/list", "server/discover", "tools/call", "ping"]))
    def check(caps, info, level, token, method):
        meta = {"io.modelcontextprotocol/clientCapabilities": caps,
                "io.modelcontextprotocol/clientInfo": info,
                "io.modelcontextprotocol/logLevel": level}
        if token is not None:
            meta["progressToken"] = token
        extra = {"name": "echo", "arguments": {"text": "x"}} if method == "tools/call" else {}
        answer = post(proxy.base, modern(method, 1, _meta=meta, **extra))
        assert answer.status_code in (200, 400), answer.text
        body = answer.json() if "json" in answer.headers["Content-Type"] else events(answer)[-1]
        assert ("result" in body) != ("error" in body)

    check()
    assert not [line for line in proxy.lines if "Traceback" in line or " ERROR " in line]


ASKER = {"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}


def ask(base: str, who: str, request_id: int = 1, prompt: str = "hi", **params) -> dict:
    message = modern("tools/call", request_id, name="ask", arguments={"prompt": prompt},
                     _meta=dict(ASKER), **params)
    answer = post(base, message, Authorization=f"Bearer {who}")
    return answer.json() if "json" in answer.headers["Content-Type"] else events(answer)[-1]


def retry(base: str, who: str, state, responses, request_id: int = 2) -> dict:
    return ask(base, who, request_id, requestState=state, inputResponses=responses)


def test_rounds_are_bound_to_their_caller_and_resume_the_same_call(legacy):
    alice = ask(legacy.base, "alice", prompt="alice's question")["result"]
    bob = ask(legacy.base, "bob", prompt="bob's question")["result"]
    schema.InputRequiredResult.model_validate(alice)
    for result, prompt in ((alice, "alice's question"), (bob, "bob's question")):
        (request,) = result["inputRequests"].values()
        assert request["method"] == "sampling/createMessage"
        assert request["params"]["messages"][0]["content"]["text"] == prompt
    key = next(iter(alice["inputRequests"]))
    sampled = {key: {"role": "assistant", "model": "m",
                     "content": {"type": "text", "text": "for alice"}}}
    for who, state, responses in (("bob", alice["requestState"], sampled),  # not bob's
                                  ("alice", "mcp-proxy:forged.sig", sampled),
                                  ("alice", alice["requestState"], {"other": {}}),
                                  ("alice", alice["requestState"], {key: "text"})):
        refused = retry(legacy.base, who, state, responses)
        assert refused["error"]["code"] == -32602, refused
    done = retry(legacy.base, "alice", alice["requestState"], sampled)  # still parked
    assert json.loads(done["result"]["content"][0]["text"])["content"]["text"] == "for alice"
    assert done["id"] == 2 and done["result"]["resultType"] == "complete"
    again = retry(legacy.base, "alice", alice["requestState"], sampled, request_id=3)
    assert again["error"] == {"code": -32602, "message": "Invalid or expired requestState"}
    calls = [m for m in recorded(legacy.record) if m.get("method") == "tools/call"]
    assert len(calls) == 2  # one per caller: each retry resumed its call, never a new one
    assert children(legacy) == 2  # alice's and bob's


def test_a_caller_with_a_round_out_gets_another_child_meanwhile(legacy):
    first = ask(legacy.base, "carol")["result"]
    assert first["resultType"] == "input_required"
    other = post(legacy.base, modern("tools/call", 5, name="echo", arguments={"text": "x"},
                                     _meta=dict(ASKER)), Authorization="Bearer carol")
    assert other.json()["result"]["content"][0]["text"] == "x"
    assert children(legacy) == 2  # the first is leased to the round that is out
    assert methods(legacy.record).count("initialize") == 2


def test_a_round_not_taken_up_is_cancelled(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--", *RAW_SERVER, "--legacy-only", "--record", str(record),
                          env={"MCP_PROXY_BRIDGE_PARK_TTL": "1"})
    first = ask(proxy.base, "dave")["result"]
    wait_until(lambda: "notifications/cancelled" in methods(record), timeout=10)
    sent = recorded(record)
    answered = next(m for m in sent if m.get("id") == "srv-1" and "method" not in m)
    assert "did not answer within 1 s" in answered["error"]["message"]
    key = next(iter(first["inputRequests"]))
    late = retry(proxy.base, "dave", first["requestState"], {key: {}})
    assert late["error"]["message"] == "Invalid or expired requestState"


def test_hostile_retries_get_clear_errors(legacy):
    first = ask(legacy.base, "erin")["result"]
    state = first["requestState"]

    @settings(max_examples=60, deadline=None, database=None)
    @given(forged=st.one_of(JUNK, st.just(state[:-2] + "AA"), st.just(state + "x")),
           responses=JUNK)
    def check(forged, responses):
        if forged is None:
            return
        answer = retry(legacy.base, "erin", forged, responses)
        assert answer["error"]["code"] == -32602, answer

    check()
    key = next(iter(first["inputRequests"]))
    done = retry(legacy.base, "erin", state, {key: {"role": "assistant", "model": "m",
                                                    "content": {"type": "text", "text": "ok"}}})
    assert done["result"]["resultType"] == "complete"
    assert not [line for line in legacy.lines if "Traceback" in line or " ERROR " in line]


def test_the_inspector_in_the_modern_era_against_server_everything(
        inspector_cli, everything, proxy_factory, tmp_path):  # noqa: F811 (fixtures)
    proxy = proxy_factory("--", *everything)
    modern_cli = ("--transport", "http", "--protocol-era", "modern")
    listed = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp", *modern_cli,
                           "--method", "tools/list")
    assert "echo" in [tool["name"] for tool in listed["tools"]]
    called = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp", *modern_cli,
                           "--method", "tools/call", "--tool-name", "echo",
                           "--tool-arg", "message=hi")
    assert called["content"][0]["text"] == "Echo: hi"
    uri = "demo://resource/static/document/architecture.md"
    read = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp", *modern_cli,
                         "--method", "resources/read", "--uri", uri)
    assert read["contents"][0]["uri"] == uri
    status = requests.get(proxy.base + "/status", timeout=5).json()
    assert status["server_instances"]["default"]["modern_lane"]["bridge"] == "modern->legacy"


def test_fingerprints_are_remembered_the_same_and_bounded():
    """The digest a bridged child is picked by is made once per capabilities (issue 25):
    the remembered one is the digest itself, whatever the order of their keys, and a caller
    that makes up new capabilities on every request cannot grow what is remembered."""
    def digest(carried, name) -> str:
        text = json.dumps([carried, name], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    values = JUNK | st.floats(allow_nan=False)

    @settings(max_examples=200, deadline=None, database=None)
    @given(carried=st.dictionaries(st.text(max_size=8), values, max_size=4), name=values)
    def check(carried, name):
        meta = {"io.modelcontextprotocol/clientInfo": {"name": name}}
        expected = digest(carried, name)
        assert legacy_bridge.fingerprint(carried, meta) == expected
        assert legacy_bridge.fingerprint(carried, meta) == expected  # remembered
        backwards = dict(reversed(list(carried.items())))
        assert legacy_bridge.fingerprint(backwards, meta) == expected
        assert len(legacy_bridge._fingerprints) <= legacy_bridge.FINGERPRINTS_KEPT

    check()
    for number in range(2 * legacy_bridge.FINGERPRINTS_KEPT):
        legacy_bridge.fingerprint({"experimental": {str(number): {}}}, {})
    assert len(legacy_bridge._fingerprints) == legacy_bridge.FINGERPRINTS_KEPT
    assert legacy_bridge.fingerprint({}, {"io.modelcontextprotocol/clientInfo": "junk"}) \
        == digest({}, None)
    huge = {"experimental": {"x": "y" * 100_000}}  # digested, never kept
    assert legacy_bridge.fingerprint(huge, {}) == digest(huge, None)
    kept = legacy_bridge.FINGERPRINT_KEY_KEPT
    assert all(len(key) <= kept for key in legacy_bridge._fingerprints)
