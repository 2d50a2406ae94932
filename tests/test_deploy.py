"""Deployment shapes: gunicorn's gevent worker, named servers, and the child's environment."""

from __future__ import annotations

import json
import os
import shlex
import time

import requests

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    SDK_SERVER,
    STREAM_HEADERS,
    GunicornProcess,
    open_sse,
    rpc,
)


def test_gunicorn_gevent_worker_serves_sessions():
    # mounted under a prefix, as behind a reverse proxy
    with GunicornProcess("--keepalive 1 -- " + shlex.join(RAW_SERVER), "--graceful-timeout", "3",
                         env={"SCRIPT_NAME": "/mcpx"}, prefix="/mcpx") as gunicorn:
        base = gunicorn.base
        reader, endpoint = open_sse(base)
        assert endpoint.startswith(base + "/messages/?session_id=")  # the prefix is kept
        requests.post(endpoint, json=rpc("ping", "g1"), timeout=10)
        assert reader.next_message() == {"jsonrpc": "2.0", "id": "g1", "result": {}}
        answer = requests.post(base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                               headers=STREAM_HEADERS, timeout=10)
        assert answer.status_code == 200 and "Mcp-Session-Id" in answer.headers
        status = requests.get(base + "/status", timeout=10).json()
        pids = [s["child"]["pid"] for s in status["session_details"] if s["child"]]
        assert len(pids) == 2
        reader.close()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_named_servers_from_flags_and_file(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "echo": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]},
        "off": {"command": "does-not-exist", "enabled": False}}}))
    proxy = proxy_factory("--named-server-config", str(config))
    proxy.expect(r"Serving echo: SSE at http://\S+/servers/echo/sse")
    reader, endpoint = open_sse(proxy.base, "/servers/echo/sse")
    assert "/servers/echo/messages/?session_id=" in endpoint
    requests.post(endpoint, json=rpc("ping", 4), timeout=10)
    assert reader.next_message()["id"] == 4
    assert requests.get(proxy.base + "/sse", timeout=10).status_code == 404
    reader.close()
    flags = proxy_factory("--named-server", "one", shlex.join(RAW_SERVER), *RAW_SERVER)
    for path in ("/sse", "/servers/one/sse"):
        reader, endpoint = open_sse(flags.base, path)
        reader.close()


def call_tool(base: str, name: str, arguments: dict) -> str:
    """initialize, initialized, tools/call over Streamable HTTP with plain requests."""
    init = requests.post(base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                         headers=STREAM_HEADERS, timeout=20)
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    requests.post(base + "/mcp", json=rpc("notifications/initialized", None), headers=headers,
                  timeout=10)
    answer = requests.post(base + "/mcp", json=rpc("tools/call", 2, name=name,
                           arguments=arguments), headers=headers, timeout=20)
    body = answer.text
    if answer.headers["Content-Type"].startswith("text/event-stream"):
        body = [line[6:] for line in body.splitlines() if line.startswith("data: ")][-1]
    return json.loads(body)["result"]["content"][0]["text"]


def test_env_cwd_and_pass_environment(proxy_factory, tmp_path):
    env = {"OUTER_SECRET": "outer"}
    plain = proxy_factory("-e", "GREETING", "hello", "--cwd", str(tmp_path), "--", *SDK_SERVER,
                          env=env)
    assert call_tool(plain.base, "env", {"name": "GREETING"}) == "hello"
    assert call_tool(plain.base, "env", {"name": "OUTER_SECRET"}) == "<unset>"
    assert call_tool(plain.base, "cwd", {}) == str(tmp_path)
    passing = proxy_factory("--pass-environment", "--", *SDK_SERVER, env=env)
    assert call_tool(passing.base, "env", {"name": "OUTER_SECRET"}) == "outer"
