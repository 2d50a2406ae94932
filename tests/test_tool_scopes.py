"""Scopes per tool ("toolScopes"), /status by scope, and sessions bound to a token's subject:
the real CLI, a real authorization server (npm oidc-provider, tests/oidc_kit.py), the official
SDK client (tests/sdk_driver.py), and two workers on a real Redis.

The servers here hide ``echo`` behind ``mcp:admin``: a caller whose token holds only
``mcp:tools`` does not list it and is refused its call (403 on /mcp, a JSON-RPC error on the
SSE stream); a stepped-up token lists and calls it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_modern import headers_for, modern
from test_scaleout import ENV, route

from conftest import INIT_PARAMS, RAW_SERVER, SDK_SERVER, STREAM_HEADERS, rpc, run_driver

pytest_plugins = ["oidc_kit"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"
NARROW, WIDE = "mcp:tools", "mcp:tools mcp:admin"
SCOPED = {"echo": "mcp:admin"}


def config(tmp_path: Path, command: list[str], **entry) -> str:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"s": {
        "command": command[0], "args": command[1:], "toolScopes": SCOPED, **entry}}}))
    return str(path)


def start(proxy_factory, provider, tmp_path, command=SDK_SERVER, *flags, env=None, **entry):
    return proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                         *flags, "--named-server-config", config(tmp_path, command, **entry),
                         env=env)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def initialize(url: str, token: str) -> dict:
    """A new Streamable HTTP session; the headers its requests carry."""
    opened = requests.post(url, json=rpc("initialize", 0, **INIT_PARAMS), timeout=15,
                           headers={**STREAM_HEADERS, **bearer(token)})
    assert opened.status_code == 200, opened.text
    return {**STREAM_HEADERS, **bearer(token), "Mcp-Session-Id":
            opened.headers["Mcp-Session-Id"], "Mcp-Protocol-Version": "2025-06-18"}


def tool_names(answer: requests.Response) -> list[str]:
    text = answer.text
    body = json.loads(text[text.index("{"):]) if "data:" in text else answer.json()
    return [tool["name"] for tool in body["result"]["tools"]]


@pytest.mark.parametrize("shared", [False, True], ids=["own-child", "shared"])
@pytest.mark.parametrize("transport", ["streamable", "sse"])
def test_a_tool_without_its_scope_is_hidden_and_refused_then_stepped_up(
        oidc, proxy_factory, tmp_path, transport, shared):
    provider = oidc()
    proxy = start(proxy_factory, provider, tmp_path, shared=shared)
    kind = "mcp" if transport == "streamable" else "sse"
    url = f"{proxy.base}/servers/s/{kind}"
    meta = requests.get(f"{proxy.base}{WELL_KNOWN}/servers/s/{kind}", timeout=10).json()
    assert meta["scopes_supported"] == ["mcp:tools", "mcp:admin"]  # listed, not required
    narrow = provider.token(url, scope=NARROW)
    seen = run_driver(transport, url, "tools", "echo", extra=(
        "--header", "Authorization", f"Bearer {narrow}"))
    assert "echo" not in seen["tools"] and "progress" in seen["tools"], seen
    assert "lacks scope mcp:admin" in json.dumps(seen["echo"]), seen
    proxy.expect(r"OAuth: refused tools/call 'echo' on POST /servers/s/(mcp|messages/) from "
                 r"127\.0\.0\.1 sub:[0-9a-f]{16}: the token lacks scope mcp:admin")
    wide = provider.token(url, scope=WIDE)
    seen = run_driver(transport, url, "tools", "echo", extra=(
        "--header", "Authorization", f"Bearer {wide}"))
    assert "echo" in seen["tools"] and seen["echo"] == "hello", seen
    assert narrow not in proxy.stderr() and wide not in proxy.stderr()


def test_on_mcp_the_refusal_is_403_with_the_challenge_to_step_up(oidc, proxy_factory,
                                                                   tmp_path):
    provider = oidc()
    proxy = start(proxy_factory, provider, tmp_path, RAW_SERVER, shared=True)
    url = proxy.base + "/servers/s/mcp"
    narrow = initialize(url, provider.token(url, scope=NARROW))
    call = rpc("tools/call", 1, name="echo", arguments={"text": "x"})
    refused = requests.post(url, json=call, headers=narrow, timeout=15)
    assert refused.status_code == 403
    assert refused.headers["WWW-Authenticate"] == (
        f'Bearer error="insufficient_scope", scope="mcp:tools mcp:admin", '
        f'resource_metadata="{proxy.base}{WELL_KNOWN}/servers/s/mcp"')
    assert refused.json()["error"]["code"] == -32003 and refused.json()["id"] == 1
    proxy.expect("refused tools/call")  # the log line may be read after the answer came
    assert sum("refused tools/call" in line for line in proxy.lines) == 1  # logged once
    listed = requests.post(url, json=rpc("tools/list", 2), headers=narrow, timeout=15)
    assert "echo" not in tool_names(listed) and "nested" in tool_names(listed)
    # the same session, its caller stepped up: the next requests carry the wider token
    wide = {**narrow, **bearer(provider.token(url, scope=WIDE))}
    assert "echo" in tool_names(requests.post(url, json=rpc("tools/list", 3), headers=wide,
                                              timeout=15))
    called = requests.post(url, json=call, headers=wide, timeout=15)
    assert called.status_code == 200 and '"x"' in called.text, called.text


def test_a_2026_07_28_request_passes_the_same_gate(oidc, proxy_factory, tmp_path):
    provider = oidc()
    proxy = start(proxy_factory, provider, tmp_path, RAW_SERVER, shared=True)
    url = proxy.base + "/servers/s/mcp"
    narrow, wide = provider.token(url, scope=NARROW), provider.token(url, scope=WIDE)

    def post(message: dict, token: str) -> requests.Response:
        return requests.post(url, json=message, timeout=15,
                             headers=headers_for(message, **bearer(token)))

    listed = post(modern("tools/list", 1), narrow)
    assert listed.status_code == 200 and "echo" not in tool_names(listed), listed.text
    call = modern("tools/call", 2, name="echo", arguments={"text": "x"})
    refused = post(call, narrow)
    assert refused.status_code == 403 and 'error="insufficient_scope"' in \
        refused.headers["WWW-Authenticate"]
    assert "echo" in tool_names(post(modern("tools/list", 3), wide))
    assert post(call, wide).status_code == 200


def test_the_sdk_client_of_the_2026_07_28_lane(oidc, proxy_factory, tmp_path):
    provider = oidc()
    proxy = start(proxy_factory, provider, tmp_path, shared=True)
    url = proxy.base + "/servers/s/mcp"
    for scope, shown in ((NARROW, False), (WIDE, True)):
        seen = run_driver("streamable", url, "tools", "echo", extra=(
            "--mode", "2026-07-28", "--header", "Authorization",
            f"Bearer {provider.token(url, scope=scope)}"))
        assert ("echo" in seen["tools"]) is shown and "progress" in seen["tools"], seen
        assert (seen["echo"] == "hello") is shown, seen


def test_scopes_cross_the_bus_with_a_forwarded_request(oidc, proxy_factory, redis_server,
                                                       tmp_path):
    provider = oidc()
    audience = "http://mcp.test/servers/s/mcp"  # one public URL in front of both workers
    flags = ("--oauth-audience", audience, "--redis-url", redis_server.url)
    a, b = (start(proxy_factory, provider, tmp_path, RAW_SERVER, *flags, env=ENV,
                  shared=True) for _ in "ab")
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    narrow = initialize(a.base + "/servers/s/mcp", provider.token(audience, scope=NARROW))
    call = rpc("tools/call", 1, name="echo", arguments={"text": "x"})
    refused = requests.post(b.base + "/servers/s/mcp", json=call, headers=narrow, timeout=15)
    assert refused.status_code == 403 and route(refused) == "forwarded", refused.text
    a.expect(r"refused tools/call 'echo' on POST /servers/s/mcp from worker:\w+ sub:")
    listed = requests.post(b.base + "/servers/s/mcp", json=rpc("tools/list", 2),
                           headers=narrow, timeout=15)
    assert route(listed) == "forwarded" and "echo" not in tool_names(listed)
    wide = {**narrow, **bearer(provider.token(audience, scope=WIDE))}
    called = requests.post(b.base + "/servers/s/mcp", json=call, headers=wide, timeout=15)
    assert called.status_code == 200 and '"x"' in called.text and \
        route(called) == "forwarded", called.text


def test_status_needs_a_token_with_the_admin_scope(oidc, proxy_factory):
    provider = oidc()
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                          "--oauth-admin-scope", "mcp:admin", "--", *RAW_SERVER)
    status = proxy.base + "/status"
    unsigned = requests.get(status, timeout=10)
    assert unsigned.status_code == 401 and unsigned.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{proxy.base}{WELL_KNOWN}", scope="mcp:admin"')
    assert requests.get(proxy.base + WELL_KNOWN, timeout=10).status_code == 200
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(proxy.base + probe, timeout=10).status_code == 200, probe
    # a token for the proxy's /mcp (or for /status itself) is one for /status too
    narrow = provider.token(proxy.base + "/mcp", scope=NARROW)
    refused = requests.get(status, headers=bearer(narrow), timeout=10)
    assert refused.status_code == 403 and 'scope="mcp:admin"' in \
        refused.headers["WWW-Authenticate"]
    for resource in (proxy.base + "/mcp", status):
        admin = provider.token(resource, scope="mcp:admin")
        assert requests.get(status, headers=bearer(admin), timeout=10).status_code == 200
    elsewhere = provider.token("http://other.test/mcp", scope="mcp:admin")
    assert requests.get(status, headers=bearer(elsewhere), timeout=10).status_code == 401


def test_without_an_admin_scope_status_takes_any_good_token(oidc, proxy_factory):
    provider = oidc()
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                          "--", *RAW_SERVER)
    status = proxy.base + "/status"
    assert requests.get(status, timeout=10).status_code == 401
    token = provider.token(proxy.base + "/mcp", scope="mcp:admin")  # not even --oauth-scope
    assert requests.get(status, headers=bearer(token), timeout=10).status_code == 200


def test_another_subjects_session_is_not_found_anywhere(oidc, proxy_factory, tmp_path):
    from oidc_kit import CLIENT, OTHER  # (a plugin here: imported once pytest has it)
    provider = oidc(clients=[CLIENT, OTHER])
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--keepalive", "60",
                          "--", *RAW_SERVER, "--record", str(tmp_path / "sent.jsonl"))
    mcp, sse = proxy.base + "/mcp", proxy.base + "/sse"
    mine = initialize(mcp, provider.token(mcp))
    theirs = {**mine, **bearer(provider.token(mcp, client=OTHER))}
    for method, body in (("POST", rpc("ping", 1)), ("GET", None), ("DELETE", None)):
        refused = requests.request(method, mcp, json=body, headers=theirs, timeout=10)
        assert refused.status_code == 404, (method, refused.text)
        assert refused.json()["error"]["message"] == "Session not found"
    proxy.expect(r"refused to sub:[0-9a-f]{16} from 127\.0\.0\.1: the session is another "
                 r"caller's")
    with requests.get(sse, headers=bearer(provider.token(sse)), stream=True,
                      timeout=10) as stream:
        endpoint = next(line for line in stream.iter_lines(decode_unicode=True)
                        if line.startswith("data:"))[5:].strip()
        posted = requests.post(proxy.base + endpoint, json=rpc("ping", 1), timeout=10,
                               headers=bearer(provider.token(sse, client=OTHER)))
        assert posted.status_code == 404 and posted.text == "Could not find session"
    assert requests.post(mcp, json=rpc("ping", 2), headers=mine, timeout=10).status_code == 200
    # a 2026-07-28 requestState sealed for one subject is refused to the other
    call = modern("tools/call", 1, name="mrtr", arguments={})
    first = requests.post(mcp, json=call, timeout=10, headers=headers_for(
        call, **bearer(provider.token(mcp)))).json()["result"]
    retry = modern("tools/call", 2, name="mrtr", arguments={},
                   requestState=first["requestState"])
    refused = requests.post(mcp, json=retry, timeout=10, headers=headers_for(
        retry, **bearer(provider.token(mcp, client=OTHER))))
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Invalid or expired requestState"
    proxy.expect(r"refused the requestState of request 2 from 127\.0\.0\.1 sub:[0-9a-f]{16}: "
                 r"another caller's")


def load(tmp_path: Path, entry: dict):
    """The config file's verdict on a server entry, in process: specs, or ConfigProblems."""
    from mcp_proxy.config.config_file import read_config
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"s": {"command": "x", **entry}}}))
    return read_config(str(path))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(max_size=12), st.one_of(
    st.text(max_size=12), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)),
    max_size=4))
def test_odd_tool_scopes_are_taken_or_refused_with_one_line_each(tmp_path, rules):
    from mcp_proxy.errors import ConfigProblems
    try:
        loaded = load(tmp_path, {"toolScopes": rules})
    except ConfigProblems as exc:
        lines = str(exc).splitlines()
        assert lines and all("$.mcpServers.s.toolScopes" in line for line in lines), lines
        for scope in rules.values():  # never the value itself (it may be a secret)
            if isinstance(scope, str) and len(scope) > 3:
                assert all(scope not in line.split(": ", 2)[-1] for line in lines)
        return
    good = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
    assert all(glob and "\0" not in glob for glob in rules)
    assert all(isinstance(scope, str) and good.fullmatch(scope) for scope in rules.values())
    assert loaded.specs["s"].tool_scopes == rules


def test_a_bad_admin_scope_stops_the_cli_with_one_line():
    """(A bad "toolScopes" entry: test_oidc.py's test_a_bad_scopes_entry_is_refused.)"""
    from conftest import ProxyProcess
    for flags, said in ((("--oauth-admin-scope", "mcp:admin"),
                         "--oauth-admin-scope needs --oauth-issuer"),
                        (("--oauth-issuer", "http://127.0.0.1:9", "--oauth-admin-scope",
                          'a "b'), "--oauth-admin-scope 'a \"b': a scope is printable")):
        done = ProxyProcess(*flags, "--", *RAW_SERVER)
        assert done.proc.wait(30) == 1
        done._reader.join(10)
        assert said in done.stderr() and "Traceback" not in done.stderr(), done.stderr()


def test_the_gate_filters_each_callers_list_and_what_crosses_the_bus():
    from mcp_proxy.config.settings import ResourceSettings, ServerSpec
    from mcp_proxy.core.jsonrpc import Message
    from mcp_proxy.server.scaleout.frames import call_frame, well_formed
    from mcp_proxy.server.tool_scopes import ScopeGate, ToolScopes

    spec = ServerSpec("x", tool_scopes={"write_*": "w", "*_file": "f", "*": "r"})
    rules = ToolScopes(spec, ResourceSettings("https://issuer.test", scopes=["base"]))
    assert rules.needed("write_file") == {"w", "f", "r"} and rules.needed(7) == frozenset()
    gate = ScopeGate(rules)
    tools = [{"name": "read"}, {"name": "write_file"}, "odd", {"name": 3}, {"x": 1}]
    assert gate.check(Message(rpc("tools/list", 1)), frozenset({"r"})) is None
    assert gate.check(Message(rpc("tools/list", 2)), None) is None  # every scope: unseen
    answer = gate.answer(Message({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
    assert answer.obj["result"]["tools"] == [{"name": "read"}, "odd", {"name": 3}, {"x": 1}]
    whole = Message({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})
    assert gate.answer(whole) is whole
    call = Message(rpc("tools/call", 3, name="write_file", arguments={}))
    assert gate.check(call, frozenset({"r", "f"})) == {"w"}
    assert gate.check(call, frozenset({"r", "f", "w"})) is None
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/mcp", "mcp_proxy.auth": "sub:1",
               "mcp_proxy.scopes": frozenset({"b", "a"}), "HTTP_AUTHORIZATION": "Bearer t"}
    frame = call_frame(environ, "c1", "w1")
    assert frame["sc"] == ["a", "b"] and "Bearer t" not in json.dumps(frame)
    assert well_formed(frame) and "sc" not in call_frame({"REQUEST_METHOD": "GET"}, "c", "w")
    for odd in ("a b", [1], {"a": "b"}, None):
        assert not well_formed({**frame, "sc": odd})


def test_stateless_requests_and_renamed_tools_pass_the_gate_by_the_name_clients_see(
        oidc, proxy_factory, tmp_path):
    provider = oidc()
    proxy = start(proxy_factory, provider, tmp_path, RAW_SERVER, "--stateless",
                  tools={"rename": {"nested": "deep"}}, toolScopes={"deep": "mcp:admin"})
    url = proxy.base + "/servers/s/mcp"
    narrow = {**STREAM_HEADERS, **bearer(provider.token(url, scope=NARROW))}
    listed = requests.post(url, json=rpc("tools/list", 1), headers=narrow, timeout=15)
    assert listed.status_code == 200, listed.text
    assert "deep" not in tool_names(listed) and "echo" in tool_names(listed)
    refused = requests.post(url, json=rpc("tools/call", 2, name="deep", arguments={}),
                            headers=narrow, timeout=15)
    assert refused.status_code == 403, refused.text
    wide = {**STREAM_HEADERS, **bearer(provider.token(url, scope=WIDE))}
    assert "deep" in tool_names(requests.post(url, json=rpc("tools/list", 3), headers=wide,
                                              timeout=15))


def test_a_combined_server_gates_its_prefixed_tools(oidc, proxy_factory, tmp_path):
    provider = oidc()
    path = tmp_path / "combined.json"
    member = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}
    path.write_text(json.dumps({"mcpServers": {
        "a": member, "b": member,
        "both": {"servers": ["a", "b"], "toolScopes": {"a__echo": "mcp:admin"}}}}))
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                          "--named-server-config", str(path))
    url = proxy.base + "/servers/both/mcp"
    narrow = initialize(url, provider.token(url, scope=NARROW))
    requests.post(url, json=rpc("notifications/initialized", None), headers=narrow, timeout=15)
    listed = tool_names(requests.post(url, json=rpc("tools/list", 1), headers=narrow,
                                      timeout=15))
    assert "a__echo" not in listed and "b__echo" in listed, listed
    call = rpc("tools/call", 2, name="a__echo", arguments={"text": "x"})
    assert requests.post(url, json=call, headers=narrow, timeout=15).status_code == 403
    other = rpc("tools/call", 3, name="b__echo", arguments={"text": "y"})
    assert '"y"' in requests.post(url, json=other, headers=narrow, timeout=15).text
    wide = {**narrow, **bearer(provider.token(url, scope=WIDE))}
    called = requests.post(url, json=call, headers=wide, timeout=15)
    assert called.status_code == 200 and '"x"' in called.text, called.text
