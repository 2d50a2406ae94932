"""Server mode's first tries (issue 19): the network variables reach the server, and the
2026-07-28 lane learns a server's era with one probe however many clients arrive at once."""

from __future__ import annotations

import json
import os
import threading

from test_deploy import call_tool
from test_modern import modern, post
from test_shared import methods

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
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["error"]["code"] == -32022
    assert methods(record) == ["server/discover"]
    assert sum("modern:default: started" in line for line in proxy.lines) == 1
    assert sum("the server is legacy-only" in line for line in proxy.lines) == 1
