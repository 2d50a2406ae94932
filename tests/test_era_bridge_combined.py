"""A 2026-07-28 client in front of a combined server and of remote servers (issues 21, 25).

The combined server's members are the SDK fixture server (``kit``, unprefixed) and the same
server behind ``legacy_only.py`` (``old``, 2025-era only, prefix ``old__``): the combined
server speaks the 2025 era to its members, and a modern client is carried on a 2025-era
session of the combined server (the modern->legacy bridge over a ``Combiner``). The remotes
are the SDK fixture server over Streamable HTTP narrowed to one era (``--era``) and another
mcp-proxy: a 2025-era remote is carried the same way, a 2026-07-28 one is relayed through
the remote's lane, and a 2025-era client in front of a 2026-07-28-only remote gets the era
bridge client mode uses. Each is driven by the official SDK (tests/sdk_driver.py) in its
``modern`` mode, and the Inspector CLI in each era against the combined server.
"""

from __future__ import annotations

import json
import sys

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_era_bridge_server import JUNK
from test_inspector import inspector_cli, run_inspector  # noqa: F401 (a fixture)
from test_modern import MODERN, events, headers_for, modern
from test_remote_upstreams import _session

from conftest import RAW_SERVER, SDK_SERVER, SERVERS, run_driver

LEGACY_SDK = [sys.executable, str(SERVERS / "legacy_only.py"), *SDK_SERVER]
SCENARIOS = ("tools", "echo", "progress", "sample", "elicit", "listen", "cancel")
ASKER = {"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}


def _config(tmp_path, servers: dict) -> str:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return str(path)


RAW_CHANGES = [*RAW_SERVER, "--legacy-only", "--changes"]  # sends list_changed and updates
COMBINED = {"kit": {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]},
            "old": {"command": LEGACY_SDK[0], "args": LEGACY_SDK[1:]},
            "raw": {"command": RAW_CHANGES[0], "args": RAW_CHANGES[1:]},
            "both": {"servers": ["kit", "old", "raw"], "prefix": {"kit": ""}}}
LISTEN = ("--listen-tools", "raw__update", "raw__change")


def status(proxy) -> dict:
    return requests.get(proxy.base + "/status", timeout=10).json()


def check(report: dict, era: str = MODERN) -> None:
    assert report["session"]["protocolVersion"] == era, report
    assert report["echo"] == "hello", report
    assert report["progress"]["values"] == [1, 2, 3], report
    assert report["sample"] == "sampled:hi there", report
    assert report["elicit"] == "accept:octocat", report
    if "listen" in report:  # the 2026-07-28 era's subscriptions
        assert report["listen"]["events"] == ["ResourceUpdated", "ToolsListChanged"], report
        assert report["listen"]["honored"]["resourceSubscriptions"] == ["memo://greeting"]
    if "subscribe" in report:  # the 2025 era's
        assert report["subscribe"] == ["memo://greeting"], report
    assert report["cancel"] == "after cancel", report


def post(url: str, message: dict, **extra: str) -> requests.Response:
    return requests.post(url, json=message, headers=headers_for(message, **extra), timeout=30)


def answer(response: requests.Response) -> dict:
    if "json" in response.headers["Content-Type"]:
        return response.json()
    return events(response)[-1]


# --- combined servers ------------------------------------------------------------------------

def test_a_modern_client_of_a_combined_server(proxy_factory, tmp_path):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, COMBINED))
    report = run_driver("streamable", proxy.base + "/servers/both/mcp", *SCENARIOS,
                        extra=("--mode", MODERN, *LISTEN))
    check(report)
    assert {"echo", "old__echo", "sample", "old__sample"} <= set(report["tools"]), report
    again = run_driver("streamable", proxy.base + "/servers/both/mcp", "script",
                       extra=("--mode", MODERN, "--script", _script(tmp_path)))
    old_echo, old_sample = again["script"]
    assert old_echo == {"text": "from old", "isError": False}, again
    assert old_sample == {"text": "sampled:from old", "isError": False}, again
    both = status(proxy)["server_instances"]["both"]
    assert both["modern_lane"]["bridge"] == "modern->legacy", both
    assert both["modern_lane"]["bridged_children"] >= 1, both
    assert sum("bridge modern->legacy" in line for line in proxy.lines) == 1
    # a 2025-era session of the same server: its members, each as /status shows it
    _session(proxy.base + "/servers/both")
    (held,) = status(proxy)["session_details"]
    assert sorted(held["child"]["members"]) == ["kit", "old", "raw"], held
    assert all(member["pid"] > 0 and member["state"] == "running"
               for member in held["child"]["members"].values()), held


def _script(tmp_path) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps([
        {"op": "call", "name": "old__echo", "args": {"text": "from old"}},
        {"op": "call", "name": "old__sample", "args": {"prompt": "from old"}}]))
    return str(path)


def a_bound_round(mine: str, other: str, tool: str) -> dict:
    """alice's call of ``tool`` on ``mine`` that asks for sampling: its input_required
    round, whose requestState is refused on ``other`` (another server), to bob, forged or
    junk; alice's retry, answered."""
    call = modern("tools/call", 1, name=tool, arguments={"prompt": "q"}, _meta=dict(ASKER))
    first = answer(post(mine, call, Authorization="Bearer alice"))["result"]
    assert first["resultType"] == "input_required", first
    assert first["requestState"].startswith("mcp-proxy:"), first  # the proxy's own handle
    (key,) = first["inputRequests"]
    sampled = {key: {"role": "assistant", "model": "m",
                     "content": {"type": "text", "text": "for alice"}}}
    retried = {**call, "id": 2, "params": {**call["params"], "requestState":
                                           first["requestState"], "inputResponses": sampled}}
    for url, who, state in ((other, "alice", first["requestState"]),
                            (mine, "bob", first["requestState"]),
                            (mine, "alice", first["requestState"][:-3] + "xyz"),
                            (mine, "alice", ["not", "a", "handle"])):
        forged = {**retried, "params": {**retried["params"], "requestState": state}}
        refused = answer(post(url, forged, Authorization=f"Bearer {who}"))
        assert refused["error"]["code"] == -32602, refused  # and the round is kept
    done = answer(post(mine, retried, Authorization="Bearer alice"))
    assert done["result"]["content"][0]["text"] == "for alice", done
    return retried


def test_rounds_of_a_combined_server_are_bound_to_it(proxy_factory, tmp_path):
    servers = {**COMBINED, "other": {"servers": ["kit", "old"], "prefix": {"kit": "k_"}}}
    proxy = proxy_factory("--named-server-config", _config(tmp_path, servers))
    both, other = proxy.base + "/servers/both/mcp", proxy.base + "/servers/other/mcp"
    retried = a_bound_round(both, other, "old__sample")
    again = answer(post(both, retried, Authorization="Bearer alice"))  # spent
    assert again["error"] == {"code": -32602, "message": "Invalid or expired requestState"}
    assert not [line for line in proxy.lines if "Traceback" in line]


def test_the_inspector_in_each_era_against_a_combined_server(
        inspector_cli, proxy_factory, tmp_path):  # noqa: F811 (a fixture)
    proxy = proxy_factory("--named-server-config", _config(tmp_path, COMBINED))
    url = proxy.base + "/servers/both/mcp"
    for era in ("legacy", "auto", "modern"):
        cli = ("--transport", "http", "--protocol-era", era)
        listed = run_inspector(inspector_cli, tmp_path, url, *cli, "--method", "tools/list")
        assert {"echo", "old__echo", "raw__echo"} <= {t["name"] for t in listed["tools"]}, era
        called = run_inspector(inspector_cli, tmp_path, url, *cli, "--method", "tools/call",
                               "--tool-name", "old__echo", "--tool-arg", f"text={era}")
        assert called["content"][0]["text"] == era, called
        read = run_inspector(inspector_cli, tmp_path, url, *cli, "--method", "resources/read",
                             "--uri", "memo://greeting")
        assert read["contents"][0]["uri"] == "memo://greeting", read
    both = status(proxy)["server_instances"]["both"]
    assert both["modern_lane"]["bridge"] == "modern->legacy", both


def test_hostile_modern_requests_to_a_combined_server(proxy_factory, tmp_path):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, COMBINED))
    url = proxy.base + "/servers/both/mcp"

    @settings(max_examples=50, deadline=None, database=None)
    @given(caps=JUNK, state=JUNK, responses=JUNK, name=st.sampled_from(
        ["echo", "old__echo", "raw__echo", "nobody__echo", "old__sample"]),
        method=st.sampled_from(["tools/call", "tools/list", "server/discover",
                                "resources/read"]))
    def check(caps, state, responses, name, method):
        params = {"_meta": {"io.modelcontextprotocol/clientCapabilities": caps}}
        if method == "tools/call":
            params.update(name=name, arguments={"text": "x", "prompt": "x"})
            if state is not None:
                params.update(requestState=state, inputResponses=responses)
        elif method == "resources/read":
            params["uri"] = name
        got = post(url, modern(method, 1, **params), Authorization="Bearer mallory")
        assert got.status_code in (200, 400, 404), got.text
        body = answer(got)
        assert ("result" in body) != ("error" in body), body

    check()
    assert not [line for line in proxy.lines if "Traceback" in line or " ERROR " in line]
