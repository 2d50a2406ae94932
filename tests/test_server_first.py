"""Server mode's first tries (issue 19): the network variables reach the server, a server
that hangs before answering ``initialize`` is shown with its stderr, and the 2026-07-28 lane
learns a server's era with one probe however many clients arrive at once."""

from __future__ import annotations

import json
import os
import re
import threading

import requests
from test_deploy import call_tool
from test_modern import modern, post
from test_shared import methods

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, open_sse, rpc
from mcp_proxy.config.settings import NETWORK_ENV_KEYS

NETWORK = {key: f"value of {key}" for key in NETWORK_ENV_KEYS}
STUCK = [f"npm http fetch GET https://registry.npmjs.org/x attempt {n} failed: "
         f"UNABLE_TO_GET_ISSUER_CERT_LOCALLY" for n in range(1, 13)]
# internal knobs (startup.py), and one network variable so the hint names at least one
FAST_START = {"MCP_PROXY_START_WARNING": "0.5", "MCP_PROXY_START_TIMEOUT": "3",
              "HTTPS_PROXY": "http://proxy.example:3128"}


def environ_of(base: str, path: str = "") -> dict:
    return json.loads(call_tool(base + path, "environ", {}))


def test_the_network_variables_reach_the_server_unless_no_pass_network(proxy_factory,
                                                                        tmp_path):
    env = {**NETWORK, "OUTER_SECRET": "outer"}
    plain = proxy_factory("--", *RAW_SERVER, env=env)
    seen = environ_of(plain.base)
    assert {key: seen.get(key) for key in NETWORK} == NETWORK
    assert "OUTER_SECRET" not in seen and seen["PATH"] == os.environ["PATH"]

    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "echo": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:], "env": {"MINE": "1"}}}}))
    dropped = proxy_factory("--no-pass-network", "--named-server-config", str(config),
                            "--", *RAW_SERVER, env=env)
    for path in ("", "/servers/echo"):
        seen = environ_of(dropped.base, path)
        assert not set(seen) & set(NETWORK) and "OUTER_SECRET" not in seen
        assert seen["PATH"] == os.environ["PATH"]
    assert environ_of(dropped.base, "/servers/echo")["MINE"] == "1"


def block(proxy, line: str) -> list[str]:
    """The lines logged after ``line``: a WARNING's stderr tail, and what follows it."""
    proxy.expect(re.escape(line))
    start = next(i for i, seen in enumerate(proxy.lines) if seen.endswith(line))
    return proxy.lines[start + 1:start + 12]


def hint(env: dict) -> str:
    given = ", ".join(key for key in NETWORK_ENV_KEYS if key in {**os.environ, **env})
    return (f"If it fetches packages (uvx, npx), check the network variables it got: {given}; "
            f"for any other variable it needs, add -e KEY VALUE or --pass-environment.")


def check_start_warnings(proxy, label: str, env: dict) -> None:
    pid = proxy.expect(rf"{label}: started \S+ \(pid (\d+)\)").group(1)
    tail = [f"  | {line}" for line in STUCK[2:]]  # the last ten of twelve
    early = block(proxy, f"WARNING mcp_proxy.children.startup: {label}: the server (pid {pid}) "
                         f"has not answered initialize after 0.5 s; the last lines of its stderr:")
    assert early[:10] == tail
    late = block(proxy, f"WARNING mcp_proxy.children.startup: {label}: no answer to initialize "
                        f"within 3 s: stopping the server (pid {pid}); the last lines of its "
                        "stderr:")
    assert late == [*tail, hint(env)]
    proxy.expect(rf"{label}: server pid {pid} stopped")
    for line in STUCK:  # the whole stderr still reaches ours, as the server wrote it
        assert line in proxy.lines


def test_a_server_silent_before_initialize_is_shown_with_its_stderr_then_stopped(
        proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--stuck", "12", env=FAST_START)
    answer = requests.post(proxy.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                           headers=STREAM_HEADERS, timeout=20)
    assert answer.json()["error"] == {
        "code": -32000, "message": "MCP server connection closed: the server did not answer "
                                   "initialize within 3 s"}
    label = proxy.expect(r"(streamable:\w+): started").group(1)
    check_start_warnings(proxy, label, FAST_START)


def test_a_shared_server_silent_before_initialize_is_shown_with_its_stderr(proxy_factory):
    proxy = proxy_factory("--shared-child", "--", *RAW_SERVER, "--stuck", "12",
                          env=FAST_START)
    answer = requests.post(proxy.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                           headers=STREAM_HEADERS, timeout=20)
    assert answer.status_code == 502
    assert answer.json()["error"]["message"] == (
        "Could not start the MCP server: shared:default: initialize failed: the server did "
        "not answer initialize within 3 s")
    check_start_warnings(proxy, "shared:default", FAST_START)


def test_a_server_that_answers_late_is_not_stopped(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--slow", "1.5", env=FAST_START)
    answer = requests.post(proxy.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                           headers=STREAM_HEADERS, timeout=20)
    assert answer.json()["result"]["serverInfo"]["name"] == "raw_server"
    label = proxy.expect(r"(streamable:\w+): started").group(1)
    proxy.expect(rf"INFO mcp_proxy.children.startup: {label}: the server answered initialize after "
                 rf"\d+ s$")
    proxy.expect(f"WARNING mcp_proxy.children.startup: {label}: the server \\(pid \\d+\\) has not "
                 f"answered initialize after 0.5 s; it has written nothing to stderr")
    assert "no answer to initialize" not in proxy.stderr()


def test_concurrent_first_modern_requests_wait_for_one_era_probe(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    # the probe's answer takes 2 s: every request arrives while it is in flight
    proxy = proxy_factory("--", *RAW_SERVER, "--legacy-only", "--slow", "2", "--record",
                          str(record))
    barrier = threading.Barrier(5)
    answers: list = [None] * 5

    def ask(n: int) -> None:
        barrier.wait(timeout=10)
        answers[n] = post(proxy.base, modern("tools/list", n))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for answer in answers:  # carried by the bridge, on one legacy child
        assert answer.status_code == 200 and answer.json()["result"]["tools"]
    assert methods(record)[:3] == ["server/discover", "initialize", "notifications/initialized"]
    assert methods(record)[3:] == ["tools/list"] * 5
    assert sum("modern:default: started" in line for line in proxy.lines) == 1
    learnt = [line for line in proxy.lines if "legacy-only" in line]
    assert len(learnt) == 1 and learnt[0].endswith(
        "INFO mcp_proxy.children.lane: modern:default: the server is legacy-only (server/discover: "
        "Method not found); 2026-07-28 requests are carried on 2025-era sessions (bridge "
        "modern->legacy)")
    assert not [line for line in proxy.lines if " WARNING " in line]  # an old server is fine


def test_a_client_that_gives_up_on_a_silent_server_leaves_its_stderr_in_the_log(
        proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--stuck", "2",
                          env={**FAST_START, "MCP_PROXY_START_TIMEOUT": "60"})
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("initialize", 1, **INIT_PARAMS), timeout=10)
    label = proxy.expect(r"(sse:\w+): started").group(1)
    proxy.expect(rf"{label}: the server \(pid \d+\) has not answered initialize after 0.5 s")
    reader.close()
    line = proxy.expect(rf"WARNING mcp_proxy.children.startup: {label}: the server \(pid \d+\) was "
                        rf"stopped before it answered initialize \(client closed its event "
                        rf"stream, after \d+ s\); the last lines of its stderr:$").string
    assert block(proxy, line)[:3] == [f"  | {STUCK[0]}", f"  | {STUCK[1]}", hint(FAST_START)]


def test_the_hint_follows_the_environment_policy(monkeypatch):
    from mcp_proxy.children import (
        startup,  # gevent objects, no monkey-patching: safe to import here
    )
    from mcp_proxy.config.settings import ServerSpec

    for key in NETWORK_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert startup.hint(ServerSpec("npx")) == (
        "If it fetches packages (uvx, npx), check the network variables it got: none (none "
        "is set in the proxy's environment); for any other variable it needs, add -e KEY "
        "VALUE or --pass-environment.")
    assert startup.hint(ServerSpec("npx", pass_network=False)) == (
        "It got none of the network variables (--no-pass-network): if it fetches packages "
        "(uvx, npx) through a proxy or TLS inspection, drop that flag.")
    assert startup.hint(ServerSpec("npx", pass_environment=True)) == (
        "It got our whole environment (--pass-environment): if it fetches packages (uvx, "
        "npx), check HTTP_PROXY, HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE and NODE_EXTRA_CA_CERTS "
        "there.")
