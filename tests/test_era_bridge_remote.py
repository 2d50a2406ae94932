"""Remote servers (``"url"``) and clients of the other era, in server mode (issues 21, 25).

The remotes are the SDK fixture server over Streamable HTTP narrowed to one era (``--era``)
and another mcp-proxy in front of a 2025-era server (which bridges it itself, so it speaks
both eras). A 2026-07-28 client of a remote that speaks that era is relayed through the
remote's lane (one remote link, ids rewritten, ``requestState`` sealed); of a 2025-era
remote, carried on a 2025-era remote session of its own (the modern->legacy bridge); a
2025-era client of a 2026-07-28-only remote gets the era bridge client mode uses. The client
is the official SDK (tests/sdk_driver.py) in its ``modern`` and ``legacy`` modes.
"""

from __future__ import annotations

import json
import subprocess

import requests
from test_client_modern import sdk_remote  # noqa: F401 (a fixture)
from test_era_bridge_combined import LEGACY_SDK, a_bound_round, check
from test_modern import MODERN
from test_remote_upstreams import _session

from conftest import SDK_SERVER, ProxyProcess, free_port, run_driver

SCENARIOS = ("tools", "echo", "progress", "sample", "elicit", "cancel")


def _front(proxy_factory, tmp_path, *urls: str):
    """The proxy under test with remote servers far0, far1, ... at ``urls``."""
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {
        f"far{number}": {"url": url} for number, url in enumerate(urls)}}))
    return proxy_factory("--named-server-config", str(path))


def instances(proxy) -> dict:
    return requests.get(proxy.base + "/status", timeout=10).json()["server_instances"]


def test_a_modern_client_is_relayed_to_a_modern_remote(
        proxy_factory, tmp_path, sdk_remote):  # noqa: F811 (a fixture)
    front = _front(proxy_factory, tmp_path, sdk_remote("modern"))
    url = front.base + "/servers/far0/mcp"
    check(run_driver("streamable", url, *SCENARIOS, "listen", extra=("--mode", MODERN)))
    far = instances(front)["far0"]
    assert far["modern_lane"] == {"state": "running", "legacy_only": False}, far
    assert far["remote"]["initialize"] == "refused", far  # the start-up probe's
    assert not [line for line in front.lines if "bridge" in line]


def test_a_modern_client_of_a_2025_remote_is_bridged(
        proxy_factory, tmp_path, sdk_remote):  # noqa: F811 (a fixture)
    front = _front(proxy_factory, tmp_path, sdk_remote("legacy"))
    url = front.base + "/servers/far0/mcp"
    check(run_driver("streamable", url, *SCENARIOS, extra=("--mode", MODERN)))
    far = instances(front)["far0"]
    assert far["modern_lane"]["legacy_only"] is True, far
    assert far["modern_lane"]["bridge"] == "modern->legacy", far
    assert far["remote"]["initialize"] == "accepted", far
    # its 2025-era clients are relayed as they always were
    report = run_driver("streamable", url, "echo", "sample", "subscribe")
    assert report["session"]["protocolVersion"] == "2025-11-25", report
    assert (report["echo"], report["sample"]) == ("hello", "sampled:hi there"), report


def test_a_2025_client_of_a_modern_remote_is_bridged(
        proxy_factory, tmp_path, sdk_remote):  # noqa: F811 (a fixture)
    front = _front(proxy_factory, tmp_path, sdk_remote("modern"))
    for path, transport in (("/mcp", "streamable"), ("/sse", "sse")):
        report = run_driver(transport, front.base + "/servers/far0" + path, *SCENARIOS,
                            "subscribe", "ping")
        check(report, "2025-11-25")
        assert report["server_requests"] == ["sampling/createMessage", "elicitation/create"]
    front.expect("server 'far0' speaks only 2026-07-28: its 2025-era sessions are bridged")
    _session(front.base + "/servers/far0")  # held open while /status is read
    status = requests.get(front.base + "/status", timeout=10).json()
    (held,) = status["session_details"]
    assert held["child"] == {"pid": None, "state": "connected", "shared": False,
                             "remote": True, "bridge": "2025 client -> 2026-07-28 server"}
    far = status["server_instances"]["far0"]
    assert far["era"] == "modern" and far["remote"]["initialize"] == "refused", far


def test_a_chain_of_proxies_in_the_modern_era(proxy_factory, tmp_path):
    """The remote is another mcp-proxy in front of a 2025-era server: it bridges, and the
    proxy under test relays the modern era to it (rounds, progress, cancellation)."""
    remote = ProxyProcess("--port", str(free_port()), "--", *LEGACY_SDK).started()
    try:
        front = _front(proxy_factory, tmp_path, remote.base + "/mcp")
        url = front.base + "/servers/far0/mcp"
        check(run_driver("streamable", url, *SCENARIOS, extra=("--mode", MODERN)))
        assert instances(front)["far0"]["modern_lane"]["legacy_only"] is False
    finally:
        remote.stop()


def test_a_remote_round_is_bound_to_its_server_and_caller(
        proxy_factory, tmp_path, sdk_remote):  # noqa: F811 (a fixture)
    url = sdk_remote("modern")
    front = _front(proxy_factory, tmp_path, url, url)  # far0 and far1: the same remote
    a_bound_round(front.base + "/servers/far0/mcp", front.base + "/servers/far1/mcp", "sample")
    assert not [line for line in front.lines if "Traceback" in line]


def test_a_remote_away_at_start_has_its_era_found_by_its_first_session(proxy_factory,
                                                                       tmp_path):
    port = free_port()
    front = _front(proxy_factory, tmp_path, f"http://127.0.0.1:{port}/mcp")
    assert instances(front)["far0"]["remote"]["initialize"] == "unknown"
    remote = subprocess.Popen([*SDK_SERVER, "streamable-http", "--era", "modern", "--port",
                               str(port)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True)
    try:
        assert any("LISTENING" in line for line in remote.stderr)  # it is up
        report = run_driver("streamable", front.base + "/servers/far0/mcp", "echo", "sample")
        assert (report["echo"], report["sample"]) == ("hello", "sampled:hi there"), report
        modern_report = run_driver("streamable", front.base + "/servers/far0/mcp", "echo",
                                   extra=("--mode", MODERN))
        assert modern_report["echo"] == "hello", modern_report
        far = instances(front)["far0"]
        assert far["remote"]["initialize"] == "refused" and far["era"] == "modern", far
    finally:
        remote.terminate()
        remote.wait(10)
