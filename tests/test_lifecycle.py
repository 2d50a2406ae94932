"""Children, sessions and the proxy process: start-up errors, crashes, stalls, shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from conftest import (
    RAW_SERVER,
    STREAM_HEADERS,
    ProxyProcess,
    open_sse,
    open_streamable,
    pids_alive,
    rpc,
)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def child_pids(base: str) -> list[int]:
    status = requests.get(base + "/status", timeout=10).json()
    return [s["child"]["pid"] for s in status["session_details"] if s["child"]]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_no_arguments_is_a_usage_error():
    done = run_cli()
    assert done.returncode == 2
    assert done.stderr == ("mcp-proxy: error: give a URL (client mode) or a server command "
                           "(server mode); see mcp-proxy --help\n")


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("mcp-proxy ")
    assert "--allow-origin" in run_cli("--help").stdout


def test_missing_command_fails_at_start():
    done = run_cli("--port", "0", "--", "no-such-command-xyz", "--flag")
    assert done.returncode == 1
    assert "no-such-command-xyz" in done.stderr and "not found" in done.stderr


def test_port_in_use_fails_at_start(raw_proxy):
    port = raw_proxy.base.rsplit(":", 1)[1]
    done = run_cli("--port", port, "--", *RAW_SERVER)
    assert done.returncode == 1
    assert "in use" in done.stderr.lower()


def test_allow_origin_does_not_swallow_the_command(proxy_factory):
    proxy = proxy_factory("--allow-origin", "*", *RAW_SERVER, "--port", "0")
    reader, endpoint = open_sse(proxy.base, headers={"Origin": "https://anything.example"})
    requests.post(endpoint, json=rpc("ping"), timeout=10)
    assert reader.next_message()["result"] == {}
    reader.close()


def test_child_stderr_is_passed_through(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--stderr-banner")
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("ping"), timeout=10)
    reader.next_message()
    proxy.expect("raw_server")
    reader.close()


def test_deprecated_sse_port_is_honoured(proxy_factory):
    probe = ProxyProcess("--", *RAW_SERVER).started()
    port = int(probe.base.rsplit(":", 1)[1])
    probe.stop()
    proxy = proxy_factory("--sse-port", str(port), "--sse-host", "127.0.0.1", *RAW_SERVER)
    assert proxy.base == f"http://127.0.0.1:{port}"


def test_child_exit_fails_in_flight_requests_and_the_proxy_keeps_serving(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--exit-after", "2")
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("ping", 1), timeout=10)
    assert reader.next_message()["id"] == 1
    requests.post(endpoint, json=rpc("ping", 2), timeout=10)  # the child exits on this one
    answer = reader.next_message()
    assert answer["id"] == 2 and "exited" in answer["error"]["message"]
    try:
        reader.next_event()
        raise AssertionError("the stream should have ended")
    except (EOFError, requests.exceptions.ChunkedEncodingError):
        pass
    later = requests.post(endpoint, json=rpc("ping", 3), timeout=10)
    assert later.status_code == 404
    fresh, fresh_endpoint = open_sse(proxy.base)
    requests.post(fresh_endpoint, json=rpc("ping", 1), timeout=10)
    assert fresh.next_message()["result"] == {}
    fresh.close()


def test_garbage_on_stdout_is_skipped_and_logged(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--garbage")
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("ping", 1), timeout=10)
    assert reader.next_message() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    proxy.expect("not JSON-RPC")
    reader.close()


def test_vanished_sse_client_is_cleaned_up(proxy_factory):
    proxy = proxy_factory("--keepalive", "0.5", "--", *RAW_SERVER)
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("ping", 1), timeout=10)
    reader.next_message()
    pids = child_pids(proxy.base)
    assert len(pids) == 1
    reader.close()
    wait_until(lambda: not child_pids(proxy.base) and not pids_alive(pids), timeout=5)


def test_ten_mib_both_ways(proxy_factory):
    proxy = proxy_factory("--max-body-size", "16MiB", "--", *RAW_SERVER)
    text = "é" * (5 << 20)  # 10 MiB of UTF-8
    reader, endpoint = open_sse(proxy.base, timeout=60)
    body = json.dumps(rpc("tools/call", 1, name="echo", arguments={"text": text}),
                      ensure_ascii=False).encode()
    assert requests.post(endpoint, data=body, headers={"Content-Type": "application/json"},
                         timeout=60).status_code == 202
    assert reader.next_message()["result"]["content"][0]["text"] == text
    reader.close()
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=60,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    answer = requests.post(proxy.base + "/mcp", data=body, timeout=60, headers={
        **STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]})
    assert answer.json()["result"]["content"][0]["text"] == text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_everything_with_no_orphans(proxy_factory, sig):
    proxy = proxy_factory("--stop-timeout", "1", "--", *RAW_SERVER, "--ignore-stdin-eof")
    readers = []
    for n in range(3):
        reader, endpoint = open_sse(proxy.base)
        requests.post(endpoint, json=rpc("ping", n), timeout=10)
        reader.next_message()
        readers.append(reader)
    pids = child_pids(proxy.base)
    assert len(pids) == 3
    started = time.monotonic()
    assert proxy.stop(sig) == 0
    assert time.monotonic() - started < 8
    wait_until(lambda: not pids_alive(pids), timeout=5)
    for reader in readers:
        reader.close()


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for ``sig`` (``SigCgt`` in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def processes_marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (the proxy's descendants)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker.encode() in environ.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids_alive(found)


# seconds after the proxy first catches SIGTERM (its first lines of Python, ~0.1 s after the
# spawn), or the moment it has announced its status URL (~0.45 s later here): each phase of
# start-up (gevent's import and patching, the options, Flask's import, the app, the
# listener) is hit by some of them
START_POINTS = [0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.27, 0.35, 0.45, "status"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when", START_POINTS)
def test_signal_at_any_moment_of_start_up_exits_cleanly(when, sig):
    marker = f"test-{uuid.uuid4().hex}"
    proxy = ProxyProcess("--", *RAW_SERVER, env={"MCP_PROXY_TEST_RUN": marker})
    try:
        wait_until(lambda: proxy.proc.poll() is not None or catches(proxy.proc.pid, signal.SIGTERM),
                   timeout=10, interval=0.001)
        if when == "status":
            proxy.started()
        else:
            time.sleep(when)  # the moment to signal at, not a synchronisation
        proxy.proc.send_signal(sig)
        assert proxy.proc.wait(15) == 0, proxy.stderr()
    finally:
        proxy.stop()
    proxy._reader.join(5)
    assert "Traceback" not in proxy.stderr(), proxy.stderr()
    assert not processes_marked(marker)


def test_idle_keep_alive_connection_does_not_hold_the_shutdown(proxy_factory):
    proxy = proxy_factory("--stop-timeout", "10", "--", *RAW_SERVER)
    url = urlsplit(proxy.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", "/status")
    answer = conn.getresponse()
    assert answer.status == 200 and answer.getheader("Connection") != "close"
    answer.read()  # the connection now waits, idle, for a next request
    started = time.monotonic()
    assert proxy.stop() == 0
    assert time.monotonic() - started < 5  # the stop timeout is 10 s
    assert conn.sock.recv(1) == b""  # hung up
    conn.close()


def test_vanished_streamable_client_is_cleaned_up(proxy_factory):
    proxy = proxy_factory("--keepalive", "0.5", "--", *RAW_SERVER)
    headers = open_streamable(proxy.base)
    stream = requests.get(proxy.base + "/mcp", headers=headers, stream=True, timeout=10)
    pids = child_pids(proxy.base)
    assert len(pids) == 1
    stream.close()  # the client vanishes without DELETE
    wait_until(lambda: not child_pids(proxy.base) and not pids_alive(pids), timeout=5)
    proxy.expect("did not reopen it within 1 s")


def test_idle_streamable_session_without_streams_times_out(proxy_factory):
    proxy = proxy_factory("--session-timeout", "1", "--", *RAW_SERVER)
    requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                  json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    assert len(child_pids(proxy.base)) == 1
    wait_until(lambda: not child_pids(proxy.base), timeout=5)
