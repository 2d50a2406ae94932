"""End to end with the official MCP SDK client (in its own process) through the real CLI.

Every MCP feature must survive the relay: tools, unicode, progress, logging, sampling,
elicitation, roots, errors, ping, unknown methods, concurrency and big messages, over
HTTP+SSE and Streamable HTTP (server mode) and over stdio (client mode).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import SDK_SERVER, TESTS, run_driver

FEATURES = ["tools", "echo", "unicode", "progress", "log", "sample", "elicit", "roots", "fail",
            "ping", "unknown_method", "concurrent", "resources", "prompts"]
PROXY = shlex.join([sys.executable, "-m", "mcp_proxy"])


def check_features(report: dict) -> None:
    assert {"echo", "progress", "log", "sample", "elicit", "roots"} <= set(report["tools"])
    assert report["echo"] == "hello"
    assert report["unicode"] == "héllo ✓ 日本"
    assert report["progress"]["values"] == [1, 2, 3]
    assert report["progress"]["result"] == "done"
    assert [(m["level"], m["data"]) for m in report["log"]["messages"]] == [
        ("warning", "hello log")]
    assert report["sample"] == "sampled:hi there"
    assert report["elicit"] == "accept:octocat"
    assert report["roots"] == "file:///tmp/root-a,file:///tmp/root-b"
    assert report["fail"]["isError"] and "boom" in report["fail"]["text"]
    assert report["ping"] == {}
    assert report["unknown_method"]["code"] == -32601
    assert report["concurrent"] == [f"msg-{i}" for i in range(10)]
    assert report["resources"] == {"listed": ["memo://greeting"],
                                   "text": "hello from a resource"}
    assert report["prompts"] == {"listed": ["greet"], "text": "Please greet octocat."}


def test_fixture_baseline_over_plain_stdio():
    check_features(run_driver("stdio", shlex.join(SDK_SERVER), *FEATURES))


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamable", "/mcp")])
def test_server_mode_relays_every_feature(proxy_factory, transport, path):
    proxy = proxy_factory("--", *SDK_SERVER)
    check_features(run_driver(transport, proxy.base + path, *FEATURES))


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamable", "/mcp")])
def test_server_mode_ten_mib_both_ways(proxy_factory, transport, path):
    proxy = proxy_factory("--max-body-size", "16MiB", "--", *SDK_SERVER)
    report = run_driver(transport, proxy.base + path, "big_in", "big_out",
                        extra=("--big", str(10 << 20)))
    assert report["big_in"] == 10 << 20
    assert report["big_out"] == 10 << 20


@pytest.mark.parametrize("transport, path", [("sse", "/sse"), ("streamable", "/mcp")])
def test_child_crash_fails_the_call_and_the_proxy_serves_on(proxy_factory, transport, path):
    proxy = proxy_factory("--", *SDK_SERVER)
    report = run_driver(transport, proxy.base + path, "echo", "crash",
                        extra=("--timeout", "20"))
    assert report["echo"] == "hello"
    # the proxy's own JSON-RPC error, at once: a driver timeout must not pass for it
    crash = report["crash"]
    assert (crash.get("type"), crash.get("code")) == ("MCPError", -32000), crash
    assert "connection closed" in crash["error"] and "exited with code 3" in crash["error"]
    proxy.expect("exited with code 3")
    assert run_driver(transport, proxy.base + path, "echo")["echo"] == "hello"


def test_two_concurrent_sessions_no_crosstalk(proxy_factory):
    proxy = proxy_factory("--", *SDK_SERVER)
    runs = [subprocess.Popen([sys.executable, str(TESTS / "sdk_driver.py"), "--transport",
                              transport, "--target", proxy.base + path, "concurrent", "log",
                              "progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for transport, path in (("sse", "/sse"), ("streamable", "/mcp"), ("sse", "/sse"))]
    for run in runs:
        out, err = run.communicate(timeout=90)
        report = json.loads(out)
        assert report["concurrent"] == [f"msg-{i}" for i in range(10)], err
        assert len(report["log"]["messages"]) == 1
        assert report["progress"]["values"] == [1, 2, 3]


def start_remote(*mode: str) -> tuple[subprocess.Popen, str]:
    """The SDK fixture server as a remote HTTP server on a free port."""
    remote = subprocess.Popen([*SDK_SERVER, *mode, "--port", "0"], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True)
    for line in remote.stderr:
        if (found := re.search(r"LISTENING (\d+)", line)):
            return remote, found.group(1)
    raise AssertionError("the SDK server did not start")


@pytest.mark.parametrize("mode, path, transport", [
    ("sse", "/sse", "sse"), ("streamable-http", "/mcp", "streamablehttp"),
    ("streamable-http", "/mcp", "auto"), ("sse", "/sse", "auto")])
def test_client_mode_to_an_sdk_remote(mode, path, transport):
    remote, port = start_remote(mode)
    try:
        target = f"{PROXY} --transport {transport} http://127.0.0.1:{port}{path}"
        check_features(run_driver("stdio", target, *FEATURES))
    finally:
        remote.terminate()
        remote.wait(10)


@pytest.mark.parametrize("path", ["/sse", "/mcp"])
def test_client_mode_chained_to_server_mode(proxy_factory, path):
    proxy = proxy_factory("--", *SDK_SERVER)
    transport = "sse" if path == "/sse" else "streamablehttp"
    target = f"{PROXY} --transport {transport} {proxy.base}{path}"
    check_features(run_driver("stdio", target, *FEATURES))


def test_client_mode_auth_against_an_sdk_remote():
    remote, port = start_remote("streamable-http", "--require-token", "s3cret")
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        target = f"{PROXY} --transport streamablehttp -H Authorization 'Bearer s3cret' {url}"
        assert run_driver("stdio", target, "echo")["echo"] == "hello"
        refused = subprocess.run([sys.executable, "-m", "mcp_proxy", "--transport",
                                  "streamablehttp", "--no-oauth", url],
                                 capture_output=True, text=True,
                                 timeout=30, stdin=subprocess.DEVNULL)
        assert refused.returncode == 1 and "authentication failed" in refused.stderr
    finally:
        remote.terminate()
        remote.wait(10)


def test_client_mode_ten_mib_both_ways():
    remote, port = start_remote("streamable-http")
    try:
        target = f"{PROXY} --transport streamablehttp http://127.0.0.1:{port}/mcp"
        report = run_driver("stdio", target, "big_in", "big_out", extra=("--big", str(10 << 20)))
        assert report["big_in"] == report["big_out"] == 10 << 20
    finally:
        remote.terminate()
        remote.wait(10)
