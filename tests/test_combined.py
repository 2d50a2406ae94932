"""Combined servers (issue 21): several stdio servers of one config file served as one.

The real CLI with two real members, the SDK fixture server (``kit``, prefix ``kit__``) and
``@modelcontextprotocol/server-everything`` (``every``, prefix ``ev_``; it pages its 100
resources by 10), driven by the official SDK client over both transports: merged lists,
calls, reads and prompts routed, pagination across members, a sampling round trip from a
member, a member that crashes and comes back while the other answers; ``--check-config`` and
the start on collisions and bad entries; a 2026-07-28 request (the era bridge's tests
are in test_era_bridge_combined.py); ``--stateless``; Redis
scale-out (the owner holds the combined session); the name tables and cursors under
Hypothesis.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import RAW_SERVER, SDK_SERVER, STREAM_HEADERS, npm_install, rpc, run_driver
from mcp_proxy.children.combined_names import SAFE_NAME, Names, seal, unseal

EVERYTHING = "@modelcontextprotocol/server-everything@2025.9.25"


@pytest.fixture(scope="module")
def everything() -> list[str]:
    return [*npm_install("everything", EVERYTHING, "dist/index.js"), "stdio"]


def _config(tmp_path, everything, shared: bool = False, **combined) -> str:
    servers = {"kit": {"command": SDK_SERVER[0], "args": SDK_SERVER[1:], "shared": shared},
               "every": {"command": everything[0], "args": everything[1:]},
               "both": {"servers": ["kit", "every"], "prefix": {"every": "ev_"}, **combined}}
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return str(path)


def _script(tmp_path, steps: list) -> tuple:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(steps))
    return ("--script", str(path))


STEPS = [
    {"op": "list", "what": "tools"},
    {"op": "call", "name": "kit__echo", "args": {"text": "from kit"}},
    {"op": "call", "name": "ev_echo", "args": {"message": "from every"}},
    {"op": "list", "what": "resources"},
    {"op": "read", "uri": "memo://greeting"},
    {"op": "read", "uri": "test://static/resource/1"},
    {"op": "prompt", "name": "kit__greet", "args": {"who": "octocat"}},
    {"op": "list", "what": "prompts"},
    {"op": "call", "name": "kit__sample", "args": {"prompt": "hi there"}},
    {"op": "page", "what": "tools", "cursor": "forged.cursor"},
    {"op": "call", "name": "nobody__echo", "args": {}},
    {"op": "call", "name": "ev_sampleLLM", "args": {"prompt": "from every", "maxTokens": 10}},
    {"op": "subscribe", "uri": "test://static/resource/2"},  # every asks for sampling then
]


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
@pytest.mark.parametrize("transport,path", [("streamable", "/mcp"), ("sse", "/sse")])
def test_lists_calls_reads_and_sampling(proxy_factory, tmp_path, everything, shared,
                                        transport, path):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, everything, shared))
    report = run_driver(transport, proxy.base + "/servers/both" + path, "script",
                        extra=_script(tmp_path, STEPS))
    assert report["session"]["serverInfo"]["name"] == "both", report["session"]
    (tools, kit_echo, ev_echo, resources, memo, static, greet, prompts, sample, forged,
     nobody, ev_sample, subscribed) = report["script"]
    assert {"kit__echo", "kit__sample", "ev_echo", "ev_add", "ev_sampleLLM"} <= \
        set(tools["names"]), tools
    assert all(name.startswith(("kit__", "ev_")) for name in tools["names"]), tools
    assert kit_echo == {"text": "from kit", "isError": False}
    assert "from every" in ev_echo["text"], ev_echo
    # every's 100 resources come 10 a page; kit's one comes on the first
    assert resources["pages"] == 10, resources
    assert resources["names"][0] == "memo://greeting"
    assert len(resources["names"]) == 101 and resources["next"] is None, resources
    assert memo["text"] and "test" not in memo["text"], memo
    assert "Resource 1" in static["text"], static
    assert "octocat" in greet["text"], greet
    assert {"kit__greet", "ev_simple_prompt"} <= set(prompts["names"]), prompts
    # sampling from a member reaches this client and its answer goes back to that member
    assert ev_sample["text"].endswith("context: from every"), ev_sample
    assert "sampled:" in ev_sample["text"], ev_sample
    if shared:  # a shared child was initialized by the proxy, which declares no sampling
        assert sample["code"] == -32021, sample
    else:
        assert sample["text"] == "sampled:hi there", sample
    assert subscribed == "subscribed", subscribed
    # every asks for the client's roots once initialized: a member's own request, answered
    assert {"roots/list", "sampling/createMessage"} == set(report["server_requests"]), report
    assert forged["code"] == -32602, forged
    assert nobody["code"] == -32602 or nobody.get("isError"), nobody


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
def test_a_member_crashes_and_comes_back(proxy_factory, tmp_path, everything, shared):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, everything, shared))
    steps = [
        {"op": "call", "name": "kit__crash", "args": {}},
        {"op": "changed", "seen": 1},  # kit went: its tools are gone
        {"op": "call", "name": "ev_echo", "args": {"message": "still here"}},
        {"op": "changed", "seen": 2},  # kit came back
        {"op": "list", "what": "tools"},
        {"op": "call", "name": "kit__echo", "args": {"text": "back"}},
    ]
    report = run_driver("streamable", proxy.base + "/servers/both/mcp", "script",
                        extra=_script(tmp_path, steps))
    crashed, gone, other, back, tools, echo = report["script"]
    assert "error" in crashed or crashed.get("isError"), crashed
    assert gone >= 1 and back >= 2, report
    assert "still here" in other["text"], other
    assert "kit__echo" in tools["names"] and "ev_echo" in tools["names"], tools
    assert echo == {"text": "back", "isError": False}, echo


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", "--check-config", *args],
                          capture_output=True, text=True, timeout=120)


def test_check_config_reports_collisions_and_bad_members(tmp_path, everything):
    twice = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]}
    path = tmp_path / "clash.json"
    path.write_text(json.dumps({"mcpServers": {
        "kit": twice, "kit2": twice,
        "both": {"servers": ["kit", "kit2"], "prefix": {"kit": "", "kit2": ""}}}}))
    done = _check("--named-server-config", str(path))
    assert done.returncode == 1, done
    assert "combined server 'both': tool 'echo' of kit2 collides with kit's 'echo'" in \
        done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mcpServers": {
        "kit": twice, "inner": {"servers": ["kit"]},
        "both": {"servers": ["kit", "ghost", "inner"], "prefix": {"every.x": "x_"}},
        "dotted.name": twice, "odd": {"servers": ["dotted.name"]}}}))
    done = _check("--named-server-config", str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert any('$.mcpServers.both.servers[1]: no server "ghost"' in line for line in lines)
    assert any("servers[2]: \"inner\" is a combined server: a combined server cannot contain "
               "another" in line for line in lines), lines
    assert any('prefix["every.x"]' in line or "prefix.every.x" in line for line in lines), lines
    assert any("odd.servers[0]: the default prefix" in line for line in lines), lines
    assert "Traceback" not in done.stderr
    good = _check("--named-server-config", _config(tmp_path, everything))
    assert good.returncode == 0, good.stderr
    assert "combined servers' names checked" in good.stdout


def test_a_collision_stops_the_start(proxy_factory, tmp_path):
    twice = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]}
    path = tmp_path / "clash.json"
    path.write_text(json.dumps({"mcpServers": {
        "kit": twice, "kit2": twice,
        "both": {"servers": ["kit", "kit2"], "prefix": {"kit2": "kit__"}}}}))
    proxy = proxy_factory("--named-server-config", str(path), wait=False)
    assert proxy.proc.wait(60) == 1
    assert "tool 'kit__echo' of kit2 collides with kit's 'echo'" in proxy.stderr()


def test_modern_era_and_stateless_served_and_filtered(proxy_factory, tmp_path, everything):
    proxy = proxy_factory("--stateless", "--named-server-config", _config(
        tmp_path, everything, tools={"deny": ["kit__crash"], "rename": {"ev_add": "plus"}}))
    url = proxy.base + "/servers/both/mcp"
    modern = requests.post(url, timeout=30, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}},
        headers={**STREAM_HEADERS, "MCP-Protocol-Version": "2026-07-28",
                 "Mcp-Method": "tools/list"})
    assert modern.status_code == 200, modern.text  # carried on a 2025-era session of its own
    names = [tool["name"] for tool in modern.json()["result"]["tools"]]
    assert "kit__echo" in names and "plus" in names and "kit__crash" not in names, names
    # stateless: each POST stands alone, yet names route by their prefix
    listed = _answer(requests.post(url, json=rpc("tools/list", 2), headers=STREAM_HEADERS,
                                   timeout=60))
    names = [tool["name"] for tool in listed["result"]["tools"]]
    assert "kit__echo" in names and "ev_echo" in names, names
    assert "kit__crash" not in names and "plus" in names and "ev_add" not in names, names
    refused = _answer(requests.post(url, headers=STREAM_HEADERS, timeout=60, json=rpc(
        "tools/call", 4, name="kit__crash", arguments={})))
    assert refused["error"]["code"] == -32602, refused
    plus = _answer(requests.post(url, headers=STREAM_HEADERS, timeout=60, json=rpc(
        "tools/call", 5, name="plus", arguments={"a": 2, "b": 3})))
    assert "5" in plus["result"]["content"][0]["text"], plus
    called = _answer(requests.post(url, headers=STREAM_HEADERS, timeout=60, json=rpc(
        "tools/call", 3, name="kit__echo", arguments={"text": "alone"})))
    assert called["result"]["content"][0]["text"] == "alone", called


def _answer(response: requests.Response) -> dict:
    """The answer in a POST's response: its JSON, or the event stream's answer."""
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()
    events = [json.loads(line[5:]) for line in response.text.splitlines()
              if line.startswith("data:")]
    return [event for event in events if "id" in event][-1]


# -- the name tables and cursors, on their own -----------------------------------------------

@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=80), st.sampled_from(["a__", "", "x-"]))
def test_odd_names_are_shown_safe_or_hidden(name, prefix):
    names = Names("tool", {"a": prefix, "b": "b__"})
    shown = names.shown("a", name)
    if shown is not None:
        assert SAFE_NAME.fullmatch(shown) and shown == prefix + name
        assert names.resolve(shown, ["a", "b"]) == ("a", name)
    assert names.shown("b", name) is None or SAFE_NAME.fullmatch("b__" + name)


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["kit", "every"]), st.text(max_size=40), min_size=1),
       st.one_of(st.text(max_size=200), st.binary(max_size=60).map(lambda b: b.hex())),
       st.integers(min_value=0, max_value=200))
def test_forged_cursors_are_refused(pages, forged, flip):
    cursor = seal("tools/list", pages)
    assert unseal("tools/list", cursor) == pages
    assert unseal("prompts/list", cursor) is None  # a cursor is good for its own list only
    assert unseal("tools/list", forged) is None or forged == cursor
    changed = list(cursor)
    changed[flip % len(changed)] = "A" if changed[flip % len(changed)] != "A" else "B"
    assert unseal("tools/list", "".join(changed)) is None


def test_scale_out_forwards_to_the_owner_of_the_combined_session(proxy_factory, redis_server,
                                                                 tmp_path):
    raw = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {
        "raw": raw, "raw2": raw, "both": {"servers": ["raw", "raw2"], "prefix": {"raw": "a_"}}}}))
    args = ("--redis-url", redis_server.url, "--named-server-config", str(path))
    env = {"MCP_PROXY_ROUTE_HEADER": "1", "MCP_PROXY_BUS_PING": "0.3"}
    owner, other = proxy_factory(*args, env=env), proxy_factory(*args, env=env)
    for proxy in (owner, other):
        proxy.expect(r"listening on Redis")
    init = requests.post(owner.base + "/servers/both/mcp", headers=STREAM_HEADERS, timeout=30,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18",
                                  capabilities={}, clientInfo={"name": "t", "version": "0"}))
    assert init.json()["result"]["serverInfo"]["name"] == "both", init.text
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
               "Mcp-Protocol-Version": "2025-06-18"}
    url = other.base + "/servers/both/mcp"
    listed = requests.post(url, json=rpc("tools/list", 1), headers=headers, timeout=30)
    assert listed.headers["Mcp-Proxy-Route"].split()[1] == "forwarded"
    names = [t["name"] for t in _answer(listed)["result"]["tools"]]
    assert {"a_echo", "raw2__echo"} <= set(names), names
    for number, name in enumerate(("a_echo", "raw2__echo"), start=2):
        called = requests.post(url, headers=headers, timeout=30, json=rpc(
            "tools/call", number, name=name, arguments={"text": name}))
        assert called.headers["Mcp-Proxy-Route"].split()[1] == "forwarded"
        assert _answer(called)["result"]["content"][0]["text"] == name
    status = requests.get(owner.base + "/status", timeout=5).json()
    assert status["server_instances"]["both"]["mode"] == "combined", status


def test_completions_subscriptions_and_odd_requests(proxy_factory, tmp_path, everything):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, everything))
    url = proxy.base + "/servers/both/mcp"
    init = requests.post(url, headers=STREAM_HEADERS, timeout=60, json=rpc(
        "initialize", 0, protocolVersion="2025-06-18", capabilities={},
        clientInfo={"name": "t", "version": "0"}))
    result = _answer(init)["result"]
    assert result["serverInfo"]["name"] == "both"
    assert {"tools", "prompts", "resources", "logging", "completions"} <= set(
        result["capabilities"]), result
    assert result["capabilities"]["resources"]["subscribe"] is True  # every's, in the union
    assert "## every" in result["instructions"], result
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}

    def ask(number: int, method: str, **params) -> dict:
        response = requests.post(url, json=rpc(method, number, **params), headers=headers,
                                 timeout=30)
        return _answer(response)

    style = ask(1, "completion/complete", ref={"type": "ref/prompt", "name": "ev_complex_prompt"},
                argument={"name": "style", "value": "c"})
    assert style["result"]["completion"]["values"] == ["casual"], style
    template = ask(2, "completion/complete", argument={"name": "id", "value": "1"},
                   ref={"type": "ref/resource", "uri": "test://static/resource/{id}"})
    assert "1" in template["result"]["completion"]["values"], template
    assert ask(4, "logging/setLevel", level="error")["result"] == {}
    assert ask(5, "ping")["result"] == {}
    assert ask(6, "foo/bar")["error"]["code"] == -32601
    assert ask(7, "tools/call", name=["x"], arguments={})["error"]["code"] == -32602
    assert ask(8, "prompts/get", name="nobody")["error"]["code"] == -32602
    assert ask(9, "resources/read", uri="nope://x")["error"]["code"] < 0
    assert ask(10, "resources/read", uri=7)["error"]["code"] == -32602
    assert ask(11, "tools/list", cursor=7)["error"]["code"] == -32602
    assert "Traceback" not in proxy.stderr()


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
def test_ids_cancellations_and_server_requests_are_mapped(proxy_factory, tmp_path, shared):
    from test_lifecycle import wait_until
    from test_shared import Client, recorded, tool

    record = tmp_path / "sent.jsonl"
    raw = {"command": RAW_SERVER[0], "args": [*RAW_SERVER[1:], "--record", str(record)],
           "shared": shared}
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {
        "raw": raw, "raw2": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]},
        "both": {"servers": ["raw", "raw2"], "prefix": {"raw": ""}}}}))
    proxy = proxy_factory("--named-server-config", str(path))
    record.unlink(missing_ok=True)  # what the start-up check sent
    a = Client(proxy.base + "/servers/both", {"sampling": {}})
    a.post(tool("ask", "mine", prompt="hold"))  # raw asks this client for sampling
    request = a.next()
    assert request["method"] == "sampling/createMessage", request
    a.post(rpc("notifications/cancelled", None, requestId="mine"))
    wait_until(lambda: any(m.get("method") == "notifications/cancelled"
                           for m in recorded(record)))
    a.post({"jsonrpc": "2.0", "id": request["id"], "result": {}})  # back to raw, its own id
    assert a.call(tool("echo", 8, text="after"))["result"]["content"][0]["text"] == "after"
    sent = recorded(record)
    ask = next(m for m in sent if m.get("method") == "tools/call"
               and m["params"]["name"] == "ask")
    cancel = next(m for m in sent if m.get("method") == "notifications/cancelled")
    assert ask["id"] != "mine" and cancel["params"]["requestId"] == ask["id"], (ask, cancel)
    assert any("result" in m and "method" not in m for m in sent), sent  # the sampling answer
    a.close()
