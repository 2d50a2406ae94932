"""Server mode's first tries (issue 19): the network variables reach the server."""

from __future__ import annotations

import json
import os

from test_deploy import call_tool

from conftest import RAW_SERVER
from mcp_proxy.settings import NETWORK_ENV_KEYS

NETWORK = {key: f"value of {key}" for key in NETWORK_ENV_KEYS}


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
