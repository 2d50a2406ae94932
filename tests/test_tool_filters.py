"""Tool filters (issue 21): "tools" in the config file, --allow-tool and --deny-tool.

The real CLI in front of the SDK fixture server, driven by the official SDK client (a list)
and by raw JSON-RPC (calls): per-session and shared children, both transports, the
2026-07-28 lane, client mode; the filter's own logic under Hypothesis; broken rules refused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (
    INIT_PARAMS,
    SDK_SERVER,
    STREAM_HEADERS,
    open_sse,
    rpc,
    run_driver,
)
from mcp_proxy.config.settings import ToolRules
from mcp_proxy.core.jsonrpc import Message, parse
from mcp_proxy.core.tool_filter import UNKNOWN_TOOL, ToolFilter
from mcp_proxy.errors import ConfigError

SDK_TOOLS = {"echo", "size", "large", "fail", "progress", "log", "sample", "elicit", "roots",
             "roots_standalone", "slow", "tagged", "change", "touch", "crash", "env", "cwd"}
# shown: echo as "say" (described anew), the rest but crash/env/cwd/large/fail
TOOLS = {"deny": ["crash", "env*"], "rename": {"echo": "say"},
         "describe": {"echo": "Says it back."}}
FLAGS = ("--deny-tool", "cwd", "--deny-tool", "large", "--allow-tool", "*")
SHOWN = SDK_TOOLS - {"crash", "env", "cwd", "large", "fail", "echo"} | {"say"}


def _config(tmp_path, shared: bool = False) -> str:
    server = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:], "shared": shared,
              "tools": {**TOOLS, "deny": [*TOOLS["deny"], "fail"]}}
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"kit": server}}))
    return str(path)


def _calls(post) -> None:
    """Through ``post(message) -> answer``: the renamed tool answers, hidden names do not."""
    said = post(rpc("tools/call", 11, name="say", arguments={"text": "hi"}))
    assert said["result"]["content"][0]["text"] == "hi", said
    for number, name in enumerate(("echo", "crash", "env", "cwd", 7), start=12):
        refused = post(rpc("tools/call", number, name=name, arguments={}))
        assert refused["error"]["code"] == UNKNOWN_TOOL, (name, refused)
        assert refused["id"] == number
    # the server still answers after all those refusals: nothing was left waiting
    assert post(rpc("tools/call", 20, name="size", arguments={"text": "abc"}))["result"]


@pytest.mark.parametrize("shared", [False, True], ids=["per-session", "shared"])
def test_server_mode_lists_and_calls(proxy_factory, tmp_path, shared):
    proxy = proxy_factory("--named-server-config", _config(tmp_path, shared), *FLAGS)
    base = proxy.base + "/servers/kit"
    for transport, path in (("streamable", "/mcp"), ("sse", "/sse")):
        listed = run_driver(transport, base + path, "tools")["tools"]
        assert set(listed) == SHOWN, (transport, listed)
    modern = run_driver("streamable", base + "/mcp", "tools", extra=("--mode", "2026-07-28"))
    assert set(modern["tools"]) == SHOWN, modern

    init = requests.post(base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, **INIT_PARAMS))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    requests.post(base + "/mcp", json=rpc("notifications/initialized", None), headers=headers,
                  timeout=10)
    _calls(lambda message: requests.post(base + "/mcp", json=message, headers=headers,
                                         timeout=10).json())
    listed = requests.post(base + "/mcp", json=rpc("tools/list", 30), headers=headers,
                           timeout=10).json()["result"]["tools"]
    say = next(tool for tool in listed if tool["name"] == "say")
    assert say["description"] == "Says it back."
    assert say["inputSchema"]["properties"]["text"]  # the rest of the tool as the server said

    reader, endpoint = open_sse(base)
    try:
        requests.post(endpoint, json=rpc("initialize", 0, **INIT_PARAMS), timeout=10)
        reader.next_message()
        requests.post(endpoint, json=rpc("notifications/initialized", None), timeout=10)

        def post(message: dict) -> dict:
            assert requests.post(endpoint, json=message, timeout=10).status_code == 202
            return reader.next_message()

        _calls(post)
    finally:
        reader.close()


def test_default_server_flags_only(proxy_factory):
    proxy = proxy_factory("--deny-tool", "c*", "--allow-tool", "e*", "--allow-tool", "size",
                          "--", *SDK_SERVER)
    listed = run_driver("streamable", proxy.base + "/mcp", "tools")["tools"]
    assert set(listed) == {"echo", "elicit", "env", "size"}


def test_client_mode(proxy_factory, clients):
    remote = proxy_factory("--", *SDK_SERVER)
    client = clients(remote.base + "/mcp", "--deny-tool", "crash", "--allow-tool", "e*")
    client.handshake()
    listed = client.call(rpc("tools/list", 1))["result"]["tools"]
    assert {tool["name"] for tool in listed} == {"echo", "elicit", "env"}
    refused = client.call(rpc("tools/call", 2, name="crash", arguments={}))
    assert refused["error"]["code"] == UNKNOWN_TOOL
    assert client.call(rpc("tools/call", 3, name="echo", arguments={"text": "x"}))["result"]
    assert client.close() == 0


def _check(tmp_path, tools) -> subprocess.CompletedProcess:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"mcpServers": {"kit": {"command": sys.executable,
                                                       "tools": tools}}}))
    return subprocess.run([sys.executable, "-m", "mcp_proxy", "--named-server-config", str(path),
                           "--check-config"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("tools", "says"), [
    ({"rename": {"a": "x", "b": "x"}}, "'a' and 'b' are both renamed to 'x'"),
    ({"rename": {"a": "b", "b": "c"}}, "'b' is both a new name and a renamed tool"),
    ({"rename": {"a": "has space"}}, "a tool name clients accept"),
    ({"allow": "x*"}, "tools.allow: expected a list, got a string"),
    ({"hide": ["x"]}, "$.mcpServers.kit.tools.hide: is not a known field"),
])
def test_broken_rules_are_refused(tmp_path, tools, says):
    done = _check(tmp_path, tools)
    assert done.returncode == 1, done
    assert says in done.stdout + done.stderr, done
    assert "Traceback" not in done.stderr


# -- the filter's own logic ------------------------------------------------------------------

names = st.text(st.sampled_from("abcxyz_-."), min_size=1, max_size=4)
rules = st.builds(
    lambda allow, deny, pairs, describe: _rules(allow, deny, pairs, describe),
    st.lists(st.sampled_from(["*", "a*", "x?", "[ab]*", "zz"]), max_size=2),
    st.lists(st.sampled_from(["*z", "b*", "c", "x.y"]), max_size=2),
    st.dictionaries(names, names, max_size=3), st.dictionaries(names, st.text(max_size=5)))


def _rules(allow, deny, pairs, describe) -> ToolRules | None:
    try:
        return ToolRules.of(allow, deny, pairs, describe)
    except ConfigError:
        return None


def _answer(request_id, result) -> Message:
    return parse(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}))


@settings(max_examples=200, deadline=None, database=None)
@given(rules, st.lists(names, max_size=8, unique=True))
def test_what_is_listed_is_what_can_be_called(rules, server_tools):
    if rules is None:
        return
    flt = ToolFilter(rules)
    flt.request(parse(json.dumps(rpc("tools/list", 1))))
    listed = flt.answer(_answer(1, {"tools": [{"name": n} for n in server_tools]}))
    shown = [tool["name"] for tool in listed.obj["result"]["tools"]]
    assert len(shown) == len(set(shown))  # a rename never makes two tools one name
    for name in shown:
        passed = flt.request(parse(json.dumps(rpc("tools/call", 2, name=name))))
        assert passed is not None and passed.params["name"] in server_tools
    hidden = set(server_tools) - set(shown) - set(rules.rename)
    for name in hidden:  # neither listed nor callable under its own name
        passed = flt.request(parse(json.dumps(rpc("tools/call", 3, name=name))))
        if name in rules.rename.values():  # shadowed: the name calls the renamed tool
            assert passed is None or passed.params["name"] != name
        else:
            assert passed is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=12)


@settings(max_examples=200, deadline=None, database=None)
@given(json_values, json_values)
def test_odd_answers_and_calls_never_raise(result, name):
    flt = ToolFilter(ToolRules.of(deny=["b*"], rename={"a": "A"}))
    flt.request(parse(json.dumps(rpc("tools/list", 1))))
    answered = flt.answer(_answer(1, result if not isinstance(result, dict) else
                                  {"tools": result.get("", result)}))
    assert answered.kind == "response"
    passed = flt.request(parse(json.dumps(rpc("tools/call", 2, name=name))))
    if passed is None:
        assert flt.refusal(parse(json.dumps(rpc("tools/call", 2, name=name)))).error["code"] \
            == UNKNOWN_TOOL


def test_an_error_answer_passes_untouched():
    flt = ToolFilter(ToolRules.of(deny=["x"]))
    flt.request(parse(json.dumps(rpc("tools/list", 5))))
    error = parse(json.dumps({"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "m"}}))
    assert flt.answer(error) is error

