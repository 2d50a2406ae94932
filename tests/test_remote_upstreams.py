"""Remote upstreams in server mode (issue 21): a config entry with ``"url"``.

The remote is another ``mcp-proxy`` in server mode started here, in front of the SDK fixture
server, asking for an API key (so the entry's header is seen to reach it). The proxy under
test serves it on ``/servers/NAME/`` over both transports, driven by the official SDK client
(tests/sdk_driver.py) and by raw JSON-RPC: lists, calls, progress, sampling and elicitation,
a tool filter, the transport learnt, the remote restarted (recovered) and gone for good (a
clear error), a remote that wants a sign-in refused at start, and broken entries refused by
``--check-config``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    INIT_PARAMS,
    SDK_SERVER,
    SERVERS,
    STREAM_HEADERS,
    ProxyProcess,
    free_port,
    rpc,
    run_driver,
)
from mcp_proxy.config.config_file import read_config
from mcp_proxy.core.tool_filter import UNKNOWN_TOOL
from mcp_proxy.errors import ConfigError

TOKEN = "remote-key-1234"
AUTH = {"Authorization": "Bearer ${REMOTE_TOKEN}"}
ENV = {"REMOTE_TOKEN": TOKEN}


def _remote(port: int) -> ProxyProcess:
    return ProxyProcess("--port", str(port), "--auth-token", TOKEN, "--", *SDK_SERVER).started()


def _front(proxy_factory, tmp_path, servers: dict, *args: str, wait: bool = True):
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return proxy_factory("--named-server-config", str(path), *args, env=ENV, wait=wait)


@pytest.fixture
def remote():
    """The remote: mcp-proxy in front of the SDK server on a fixed port (it may be restarted)."""
    port = free_port()
    started = [_remote(port)]
    yield port, started
    for proxy in started:
        proxy.stop()


def _session(base: str) -> tuple[dict, callable]:
    """A raw Streamable HTTP session on ``base``: (its headers, post(message) -> answer)."""
    init = requests.post(base + "/mcp", headers=STREAM_HEADERS, timeout=20,
                         json=rpc("initialize", 0, **INIT_PARAMS))
    assert init.status_code == 200, init.text
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    requests.post(base + "/mcp", json=rpc("notifications/initialized", None), headers=headers,
                  timeout=20)

    def post(message: dict) -> requests.Response:
        return requests.post(base + "/mcp", json=message, headers=headers, timeout=30)

    return headers, post


def _answer(response: requests.Response) -> dict:
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


def test_both_transports_both_ways(proxy_factory, tmp_path, remote):
    port, _ = remote
    servers = {
        "far": {"url": f"http://127.0.0.1:{port}/mcp", "headers": AUTH,
                "tools": {"deny": ["crash"], "rename": {"echo": "say"}}},
        # auto: learns SSE; the query's secret stays out of the log
        "farsse": {"url": f"http://127.0.0.1:{port}/sse?key=q-secret-value", "headers": AUTH},
    }
    front = _front(proxy_factory, tmp_path, servers)
    front.expect(r"remote server 'farsse' speaks sse")
    for server in ("far", "farsse"):
        for transport, path in (("streamable", "/mcp"), ("sse", "/sse")):
            seen = run_driver(transport, f"{front.base}/servers/{server}{path}", "tools",
                              "progress", "sample", "elicit")
            assert seen["progress"]["result"] == "done", seen
            assert seen["progress"]["values"] == [1.0, 2.0, 3.0]
            assert seen["sample"] == "sampled:hi there", seen
            assert seen["elicit"] == "accept:octocat", seen
            assert ("say" in seen["tools"]) == (server == "far"), seen["tools"]
            assert ("crash" in seen["tools"]) == (server == "farsse"), seen["tools"]
    # a dual-era client finds the 2026-07-28 era (the remote mcp-proxy serves it too), and
    # is relayed to the remote through the remote's lane: one more remote session, the lane's
    dual = run_driver("streamable", f"{front.base}/servers/far/mcp", "tools",
                      extra=("--mode", "auto"))
    assert dual["session"]["protocolVersion"] == "2026-07-28", dual
    assert "say" in dual["tools"], dual

    _, post = _session(front.base + "/servers/far")
    said = _answer(post(rpc("tools/call", 5, name="say", arguments={"text": "hi"})))
    assert said["result"]["content"][0]["text"] == "hi", said
    for number, name in enumerate(("echo", "crash"), start=6):
        refused = _answer(post(rpc("tools/call", number, name=name, arguments={})))
        assert refused["error"]["code"] == UNKNOWN_TOOL, refused

    status = requests.get(front.base + "/status", timeout=10).json()["server_instances"]
    assert status["far"]["mode"] == "remote"
    assert status["far"]["remote"]["transport"] == "streamablehttp"
    assert status["farsse"]["remote"]["transport"] == "sse"
    assert status["far"]["remote"]["remote_sessions"] == 2  # _session's and the lane's
    assert status["far"]["modern_lane"] == {"state": "running", "legacy_only": False}
    assert status["far"]["remote"]["state"] == "connected"
    assert TOKEN not in json.dumps(status)
    metrics = requests.get(front.base + "/metrics", timeout=10).text
    assert 'mcp_proxy_remote_up{server="far"} 1.0' in metrics
    assert 'mcp_proxy_remote_sessions{server="far",state="connected"} 2.0' in metrics
    assert 'mcp_proxy_messages_relayed_total{direction="client_to_server",kind="request",' \
           'server="far"}' in metrics
    assert requests.get(front.base + "/readyz", timeout=10).status_code == 200
    assert TOKEN not in front.stderr() and "q-secret-value" not in front.stderr()
    assert "q-secret-value" not in json.dumps(status)


def test_remote_restarted_is_recovered(proxy_factory, tmp_path, remote):
    port, started = remote
    front = _front(proxy_factory, tmp_path, {"far": {"url": f"http://127.0.0.1:{port}/mcp",
                                                     "headers": AUTH, "recoveryTimeout": 60}})
    _, post = _session(front.base + "/servers/far")
    echo = rpc("tools/call", 1, name="echo", arguments={"text": "before"})
    assert _answer(post(echo))["result"]["content"][0]["text"] == "before"

    started[0].stop()
    started.append(_remote(port))
    deadline, answers = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        answer = _answer(post(rpc("tools/call", len(answers) + 2, name="echo",
                                  arguments={"text": "after"})))
        answers.append(answer)
        if "result" in answer:
            break
        assert "remote" in answer["error"]["message"], answer  # a clear error, meanwhile
        time.sleep(0.5)
    assert answers[-1]["result"]["content"][0]["text"] == "after", answers
    front.expect(r"far: reconnected and re-initialized")


def test_remote_down_for_good(proxy_factory, tmp_path, remote):
    port, started = remote
    front = _front(proxy_factory, tmp_path, {"far": {"url": f"http://127.0.0.1:{port}/mcp",
                                                     "headers": AUTH, "recoveryTimeout": 2}})
    base = front.base + "/servers/far"
    _, post = _session(base)
    started[0].stop()
    deadline, last = time.monotonic() + 40, None
    while time.monotonic() < deadline:  # errors (never a hang) until the session ends
        response = post(rpc("tools/call", 9, name="echo", arguments={"text": "x"}))
        if response.status_code == 404:
            break
        last = _answer(response)
        assert last["error"]["message"], last
        time.sleep(0.5)
    else:
        raise AssertionError(f"the session outlived its remote: {last}")
    front.expect(r"could not reconnect within 2 s")
    refused = requests.post(base + "/mcp", headers=STREAM_HEADERS, timeout=30,
                            json=rpc("initialize", 0, **INIT_PARAMS))
    assert refused.status_code == 502
    assert "remote server 'far'" in refused.json()["error"]["message"]
    ready = requests.get(front.base + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert "remote unreachable" in ready.json()["servers"]["far"]["reasons"][0]
    status = requests.get(front.base + "/status", timeout=10).json()["server_instances"]
    assert status["far"]["remote"]["state"] == "unreachable"
    assert status["far"]["remote"]["last_error"]


def test_unreachable_at_start_is_only_a_warning(proxy_factory, tmp_path):
    port = free_port()
    front = _front(proxy_factory, tmp_path, {"far": {"url": f"http://127.0.0.1:{port}/mcp",
                                                     "headers": AUTH}})
    front.expect(r"remote server 'far' .* is not reachable yet")
    assert requests.get(front.base + "/status", timeout=10).json()["server_instances"][
        "far"]["remote"]["transport"] == "auto"
    later = _remote(port)
    try:  # the first session learns the transport then
        seen = run_driver("streamable", front.base + "/servers/far/mcp", "echo")
        assert seen["echo"] == "hello", seen
        assert requests.get(front.base + "/status", timeout=10).json()["server_instances"][
            "far"]["remote"]["transport"] == "streamablehttp"
    finally:
        later.stop()


def test_sign_in_remote_refused_at_start(proxy_factory, tmp_path, remote):
    port, _ = remote
    front = _front(proxy_factory, tmp_path, {"far": {"url": f"http://127.0.0.1:{port}/mcp"}},
                   wait=False)
    assert front.proc.wait(30) == 1
    line = front.expect(r"server 'far': http://127\.0\.0\.1:\d+/mcp asks for a sign-in").string
    assert "client credentials" in line and '"headers"' in line, line
    assert "Traceback" not in front.stderr()

    wrong = _front(proxy_factory, tmp_path, {"far": {
        "url": f"http://127.0.0.1:{port}/mcp", "headers": {"Authorization": "Bearer nope"}}},
        wait=False)
    assert wrong.proc.wait(30) == 1
    wrong.expect(r"server 'far': .* authentication failed")


@pytest.fixture
def oauth_remote():
    """An OAuth-protected MCP server (servers/oauth_server.py) that knows client ``svc``."""
    sys.path.insert(0, str(SERVERS))
    import oauth_server

    server = oauth_server.start(registration=False, clients={
        "svc": {"secret": "svc-secret-1", "method": "client_secret_basic"}})
    yield server
    server.shutdown()
    server.server_close()


def test_client_credentials(proxy_factory, tmp_path, oauth_remote):
    front = _front(proxy_factory, tmp_path, {"svc": {
        "url": oauth_remote.base + "/mcp", "transport": "streamablehttp", "clientId": "svc",
        "clientSecret": "${SVC_SECRET:-svc-secret-1}"}})
    for transport, path in (("streamable", "/mcp"), ("sse", "/sse")):
        seen = run_driver(transport, f"{front.base}/servers/svc{path}", "tools")
        assert seen["tools"] == ["echo", "admin"], seen
    grants = {request["grant_type"] for request in oauth_remote.token_requests}
    assert grants == {"client_credentials"}
    assert "svc-secret-1" not in front.stderr()
    assert not any(token in front.stderr() for token in oauth_remote.tokens)


def test_oauth_sign_in_refused_at_start(proxy_factory, tmp_path, oauth_remote):
    """The remote's 401 asks for an OAuth sign-in (its Bearer challenge names its metadata):
    a server cannot open a browser, and says what to configure instead."""
    front = _front(proxy_factory, tmp_path, {"web": {"url": oauth_remote.base + "/mcp"}},
                   wait=False)
    assert front.proc.wait(30) == 1
    line = front.expect(r"server 'web': .* asks for a sign-in").string
    assert "cannot run in a server" in line and "clientId" in line, line
    assert not oauth_remote.authorize_params  # nobody was sent to sign in


def _check(tmp_path, servers: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return subprocess.run([sys.executable, "-m", "mcp_proxy", "--named-server-config",
                           str(path), *args], capture_output=True, text=True, timeout=60)


def test_check_config_broken_entries(tmp_path):
    broken = {
        "both": {"url": "http://127.0.0.1:1/mcp", "command": sys.executable},
        "neither": {"args": ["x"]},
        "scheme": {"url": "ftp://example.com/mcp"},
        "nohost": {"url": "http:///mcp"},
        "port": {"url": "http://example.com:99999/mcp"},
        "bundle": {"url": "https://example.com/mcp", "verifySsl": str(tmp_path / "none.pem")},
        "secret": {"url": "https://example.com/mcp", "clientSecret": "s3cret-value"},
    }
    done = _check(tmp_path, broken, "--check-config")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert any("$.mcpServers.both" in line and "not both" in line for line in lines), lines
    assert any("$.mcpServers.neither" in line and '"command" is required' in line
               for line in lines), lines
    done = _check(tmp_path, {name: entry for name, entry in broken.items()
                             if name not in ("both", "neither")}, "--check-config")
    assert done.returncode == 1, done
    text = done.stderr
    for name, words in (("scheme", "not an http:// or https:// URL"),
                        ("nohost", "not an http:// or https:// URL"),
                        ("port", "a bad port"), ("bundle", "no CA bundle file"),
                        ("secret", "needs clientId")):
        assert f"server {name!r}: " in text and words in text, (name, text)
    assert "s3cret-value" not in text
    bad = _check(tmp_path, {"t": {"url": "https://example.com/mcp", "transport": "ws",
                                  "headers": {"X-A": "a\nb"}, "verifySsl": 1}}, "--check-config")
    assert bad.returncode == 1
    for words in ('must be "auto", "sse" or "streamablehttp"', "line break",
                  "expected true or false or a string"):
        assert words in bad.stderr, bad.stderr


def test_check_and_print_config_of_a_good_entry(tmp_path):
    good = {"far": {"url": "https://user:pw@example.com/mcp?api_key=k1", "transport": "sse",
                    "headers": {"Authorization": "Bearer t0ken-value", "X-Team": "blue",
                                "X-Api-Key": "k2-value"},
                    "clientId": "me", "clientSecret": "s3cret-value", "verifySsl": False}}
    done = _check(tmp_path, good, "--check-config")
    assert done.returncode == 0, done.stderr
    assert "1 remote URL(s) well-formed" in done.stdout
    printed = _check(tmp_path, good, "--print-config")
    assert printed.returncode == 0, printed.stderr
    shown = json.loads(printed.stdout)["mcpServers"]["far"]
    assert shown["headers"] == {"Authorization": "***", "X-Team": "blue", "X-Api-Key": "***"}
    assert shown["clientSecret"] == "***" and shown["clientId"] == "me"
    for secret in ("pw", "k1", "t0ken-value", "k2-value", "s3cret-value"):
        assert secret not in printed.stdout.replace('"transport"', ""), secret
    mixed = _check(tmp_path, {**good, "far": {**good["far"], "args": ["x"]},
                              "near": {"command": sys.executable, "headers": {"X-A": "b"}}},
                   "--check-config")
    assert mixed.returncode == 0, mixed.stderr
    assert "$.mcpServers.far: ignoring 'args' (a remote server has no command)" in mixed.stderr
    assert "$.mcpServers.near: ignoring 'headers'" in mixed.stderr
    stateless = _check(tmp_path, {"far": {**good["far"], "shared": True}}, "--stateless",
                       "--check-config")  # one remote session for every client: shared_remote
    assert stateless.returncode == 0, stateless.stderr


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.text(max_size=40), transport=st.sampled_from(["auto", "sse", "streamablehttp"]),
       verify=st.one_of(st.booleans(), st.text(max_size=10)))
def test_any_url_is_accepted_or_refused_in_one_line(tmp_path, url, transport, verify):
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps({"mcpServers": {"x": {
        "url": url, "transport": transport, "verifySsl": verify}}}))
    try:
        spec = read_config(str(path)).specs["x"]
        spec.check()
    except ConfigError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            assert "\n" not in line and line


def test_a_remote_servers_secrets_are_hidden_from_the_moment_it_is_made():
    """Whoever makes a remote server (the start, --check-config's combined-name check, a
    reload) has its header values and URL query out of every log line before its first
    contact: the combined check used to log a member's failing GET URL, query and all."""
    import logging

    from mcp_proxy.config.remote_entry import remote_settings
    from mcp_proxy.config.settings import ToolRules
    from mcp_proxy.upstream.remote_server import RemoteServer

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    keep = Keep()
    root = logging.getLogger()
    root.addHandler(keep)
    try:
        RemoteServer("far", remote_settings({
            "url": "http://127.0.0.1:9/mcp?key=query-secret-1234",
            "headers": {"Authorization": "Bearer header-secret-5678"}}), ToolRules())
        logging.getLogger("mcp_proxy.test").warning(
            "GET http://127.0.0.1:9/mcp?key=query-secret-1234 with Bearer header-secret-5678")
    finally:
        root.removeHandler(keep)
    assert seen and "query-secret-1234" not in seen[0] and "header-secret-5678" not in seen[0]
