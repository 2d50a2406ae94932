"""The official MCP Inspector's CLI (2.x) against a proxy, as the README tells users to run it.

The Inspector needs Node >= 22.19; on first use Node 22 and the Inspector are installed from
the npm registry into ``.cache/inspector`` (git-ignored), about 300 MB and half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import SDK_SERVER, npm_install

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
# the newest: its resources are what the tests read (test_combined.py pins an older one)
EVERYTHING = "@modelcontextprotocol/server-everything@latest"


@pytest.fixture(scope="module")
def inspector_cli() -> list[str]:
    """The command that runs the Inspector, installed on first use."""
    return [*npm_install("inspector", INSPECTOR, "clients/launcher/build/index.js"), "--cli"]


@pytest.fixture(scope="module")
def everything() -> list[str]:
    """server-everything (2025-era only), installed on first use."""
    return [*npm_install("everything-latest", EVERYTHING, "dist/index.js"), "stdio"]


def run_inspector(cli: list[str], home: Path, *args: str) -> dict:
    done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(home)})  # it keeps state in ~
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def test_inspector_cli_lists_and_calls_tools_through_the_proxy(inspector_cli, proxy_factory,
                                                               tmp_path):
    proxy = proxy_factory("--", *SDK_SERVER)
    listed = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp",
                           "--transport", "http", "--method", "tools/list")
    assert "echo" in [tool["name"] for tool in listed["tools"]]
    called = run_inspector(inspector_cli, tmp_path, proxy.base + "/sse", "--transport", "sse",
                           "--method", "tools/call", "--tool-name", "echo",
                           "--tool-arg", "text=through the proxy")
    assert called["content"] == [{"type": "text", "text": "through the proxy"}]


def test_inspector_cli_in_the_modern_era_through_the_proxy(inspector_cli, proxy_factory,
                                                           tmp_path):
    proxy = proxy_factory("--", *SDK_SERVER)
    listed = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp", "--transport", "http",
                           "--protocol-era", "modern", "--method", "tools/list")
    assert "echo" in [tool["name"] for tool in listed["tools"]]
    called = run_inspector(inspector_cli, tmp_path, proxy.base + "/mcp", "--transport", "http",
                           "--protocol-era", "modern", "--method", "tools/call",
                           "--tool-name", "echo", "--tool-arg", "text=modern")
    assert called["content"][0]["text"] == "modern"


def test_inspector_cli_through_a_combined_server(inspector_cli, proxy_factory, tmp_path):
    kit = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]}
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "kit": kit, "kit2": kit, "both": {"servers": ["kit", "kit2"]}}}))
    proxy = proxy_factory("--named-server-config", str(config))
    base = proxy.base + "/servers/both"
    listed = run_inspector(inspector_cli, tmp_path, base + "/mcp", "--transport", "http",
                           "--method", "tools/list")
    assert {"kit__echo", "kit2__echo"} <= {tool["name"] for tool in listed["tools"]}
    called = run_inspector(inspector_cli, tmp_path, base + "/sse", "--transport", "sse",
                           "--method", "tools/call", "--tool-name", "kit2__echo",
                           "--tool-arg", "text=combined")
    assert called["content"] == [{"type": "text", "text": "combined"}]


@pytest.mark.parametrize(("era", "path"), [("legacy", "/mcp"), ("legacy", "/sse"),
                                           ("auto", "/mcp")])
def test_the_inspector_in_each_era_against_server_everything(inspector_cli, everything,
                                                             proxy_factory, tmp_path, era, path):
    """The 2025 era relayed (``legacy``), and ``auto``, which probes ``server/discover`` and
    takes the 2026-07-28 era the proxy offers in front of this 2025-only server (the
    ``modern`` era: test_era_bridge_server.py)."""
    proxy = proxy_factory("--", *everything)
    cli = ("--transport", "http" if path == "/mcp" else "sse", "--protocol-era", era)
    listed = run_inspector(inspector_cli, tmp_path, proxy.base + path, *cli,
                           "--method", "tools/list")
    assert "echo" in [tool["name"] for tool in listed["tools"]]
    called = run_inspector(inspector_cli, tmp_path, proxy.base + path, *cli,
                           "--method", "tools/call", "--tool-name", "echo",
                           "--tool-arg", "message=hi")
    assert called["content"][0]["text"] == "Echo: hi"
    server = requests.get(proxy.base + "/status", timeout=5).json()["server_instances"][
        "default"]
    if era == "auto":  # it asked server/discover, and got the bridge's
        assert server["modern_lane"]["bridge"] == "modern->legacy", server
    else:  # the 2025 era: sessions, each with its own process; no 2026-07-28 request at all
        assert "modern_lane" not in server, server
