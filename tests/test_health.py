"""The probes of server mode: /healthz, /readyz (spawn failures, crash loops) and /metrics."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, open_sse, rpc

PROBES = ("/healthz", "/readyz", "/metrics")


def scrape(base: str) -> dict[tuple, float]:
    """/metrics as ``{(sample name, sorted label items...): value}``."""
    answer = requests.get(base + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        assert family.documentation, family.name  # every metric has HELP text
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, *sorted(labels.items())), 0.0)


def wait_for(predicate, what: str, timeout: float = 15.0):
    """Poll ``predicate`` (bounded) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def readyz(base: str) -> tuple[int, dict]:
    answer = requests.get(base + "/readyz", timeout=10)
    return answer.status_code, answer.json()


def start_mcp_session(base: str) -> requests.Response:
    return requests.post(base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                         headers=STREAM_HEADERS, timeout=10)


def flaky_server(tmp_path: Path) -> tuple[Path, Path]:
    """An executable script that runs the raw server, or exits 1 at once while ``broken``
    exists; returns (script, broken)."""
    script, broken = tmp_path / "server.sh", tmp_path / "broken"
    script.write_text(f"#!/bin/sh\n[ -e {shlex.quote(str(broken))} ] && exit 1\n"
                      f"exec {shlex.join(RAW_SERVER)}\n")
    script.chmod(0o755)
    return script, broken


def test_probes_pass_without_token_and_with_any_host(proxy_factory):
    proxy = proxy_factory("--auth-token", "s3cret", "--", *RAW_SERVER)
    base = proxy.base
    foreign = {"Host": "evil.example", "Origin": "http://evil.example"}
    for path in PROBES:
        for headers in ({}, foreign):
            answer = requests.get(base + path, headers=headers, timeout=10)
            assert answer.status_code == 200, (path, headers, answer.text)
    assert requests.get(base + "/healthz", timeout=10).text == "ok\n"
    assert readyz(base) == (200, {"ready": True, "servers": {"default": {"ready": True}}})
    # everything else still checks the token and the Host
    assert requests.get(base + "/sse", timeout=10).status_code == 401
    assert requests.get(base + "/status", headers=foreign, timeout=10).status_code == 421
    counted = scrape(base)
    assert sample(counted, "mcp_proxy_http_responses_total", code="401") == 1
    assert sample(counted, "mcp_proxy_http_responses_total", code="421") == 1
    assert sample(counted, "mcp_proxy_http_responses_total", code="200") >= 6


def test_probes_live_at_the_root_only(proxy_factory):
    proxy = proxy_factory("--named-server", "echo", shlex.join(RAW_SERVER))
    for path in PROBES:
        assert requests.get(proxy.base + path, timeout=10).status_code == 200
        assert requests.get(proxy.base + "/servers/echo" + path,
                            timeout=10).status_code == 404
    assert readyz(proxy.base)[1]["servers"] == {"echo": {"ready": True}}


def test_a_fresh_proxy_has_every_session_gauge_at_zero(proxy_factory):
    """An absent() alert on the gauge must not fire before the first session."""
    proxy = proxy_factory("--named-server", "one", shlex.join(RAW_SERVER),
                          "--named-server", "two", shlex.join(RAW_SERVER))
    samples = scrape(proxy.base)
    for server in ("one", "two"):
        for transport in ("sse", "streamable"):
            key = ("mcp_proxy_sessions_open", ("server", server), ("transport", transport))
            assert samples.get(key) == 0, sorted(k for k in samples if "sessions" in k[0])


def test_metrics_follow_real_traffic(raw_proxy):
    base = raw_proxy.base
    before = scrape(base)
    assert sample(before, "mcp_proxy_server_processes_started_total", server="default") == 0
    assert sample(before, "mcp_proxy_tool_call_seconds_count", server="default") == 0

    # an SSE session: initialize, then a tool that asks the client for sampling
    reader, endpoint = open_sse(base)
    requests.post(endpoint, json=rpc("initialize", 1, **INIT_PARAMS), timeout=10)
    assert reader.next_message()["id"] == 1
    requests.post(endpoint, json=rpc("notifications/initialized", None), timeout=10)
    requests.post(endpoint, json=rpc("tools/call", 2, name="ask", arguments={"prompt": "hi"}),
                  timeout=10)
    asked = reader.next_message()
    assert asked["method"] == "sampling/createMessage"
    requests.post(endpoint, json={"jsonrpc": "2.0", "id": asked["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "yes"}, "model": "m"}},
        timeout=10)
    assert reader.next_message()["id"] == 2

    # a Streamable HTTP session: initialize, then tools/call echo
    init = start_mcp_session(base)
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    echo = requests.post(base + "/mcp", json=rpc("tools/call", 3, name="echo",
                         arguments={"text": "x" * 1000}), headers=headers, timeout=10)
    assert echo.json()["result"]["content"][0]["text"] == "x" * 1000

    during = scrape(base)
    relayed = {(d, k): sample(during, "mcp_proxy_messages_relayed_total", server="default",
                              direction=d, kind=k)
               for d in ("client_to_server", "server_to_client")
               for k in ("request", "notification", "response")}
    assert relayed == {("client_to_server", "request"): 4,  # 2 initialize, 2 tools/call
                       ("client_to_server", "notification"): 1,
                       ("client_to_server", "response"): 1,  # the sampling answer
                       ("server_to_client", "request"): 1,  # sampling/createMessage
                       ("server_to_client", "notification"): 0,
                       ("server_to_client", "response"): 4}
    assert sample(during, "mcp_proxy_relayed_bytes_total", server="default",
                  direction="server_to_client") > 1000
    assert sample(during, "mcp_proxy_relayed_bytes_total", server="default",
                  direction="client_to_server") > 1000
    assert sample(during, "mcp_proxy_tool_call_seconds_count", server="default") == 2
    assert sample(during, "mcp_proxy_tool_call_seconds_sum", server="default") > 0
    assert sample(during, "mcp_proxy_sessions_open", server="default", transport="sse") == 1
    assert sample(during, "mcp_proxy_sessions_open", server="default",
                  transport="streamable") == 1
    assert sample(during, "mcp_proxy_server_processes_started_total", server="default") == 2
    assert sample(during, "mcp_proxy_server_processes_running", server="default") == 2
    assert sample(during, "mcp_proxy_http_responses_total", code="202") == 4
    assert sample(during, "mcp_proxy_queued_bytes") == 0
    assert sample(during, "process_resident_memory_bytes") > 0

    # both sessions end: their children exit on stdin EOF with code 0
    reader.close()
    assert requests.delete(base + "/mcp", headers=headers, timeout=10).status_code == 200
    after = wait_for(lambda: (s := scrape(base)) and sample(
        s, "mcp_proxy_server_processes_exited_total", server="default", code="0") == 2 and s,
        "both children to be reaped")
    assert sample(after, "mcp_proxy_server_processes_running", server="default") == 0
    assert sample(after, "mcp_proxy_sessions_open", server="default", transport="sse") == 0


def test_readyz_reports_a_command_that_cannot_start(proxy_factory, tmp_path):
    script, _ = flaky_server(tmp_path)
    proxy = proxy_factory("--", str(script))
    base = proxy.base
    assert readyz(base)[0] == 200
    text = script.read_text()
    script.unlink()  # the server is gone after start-up, before any session

    status, body = readyz(base)
    assert status == 503 and body["ready"] is False
    assert body["servers"]["default"]["reasons"] == [
        f"command {str(script)!r} is not an executable file"]
    assert start_mcp_session(base).status_code == 502
    status, body = readyz(base)
    assert status == 503
    assert re.fullmatch(rf"spawn failed \d+ s ago: cannot start {re.escape(repr(str(script)))}"
                        r": .+", body["servers"]["default"]["reasons"][1])
    assert sample(scrape(base), "mcp_proxy_spawn_failures_total", server="default") == 1
    assert requests.get(base + "/status", timeout=10).json()[
        "server_instances"]["default"]["ready"] is False

    script.write_text(text)  # back, but the failed spawn still counts until one succeeds
    script.chmod(0o755)
    status, body = readyz(base)
    assert status == 503 and len(body["servers"]["default"]["reasons"]) == 1
    assert start_mcp_session(base).status_code == 200
    assert readyz(base)[0] == 200


def test_readyz_reports_a_crash_loop(proxy_factory, tmp_path):
    script, broken = flaky_server(tmp_path)
    broken.touch()
    proxy = proxy_factory("--", str(script))
    base = proxy.base
    assert readyz(base)[0] == 200  # nothing has crashed yet
    for _ in range(3):
        start_mcp_session(base)  # the child exits 1 at once: the POST gets an error
    status, body = wait_for(lambda: (r := readyz(base))[0] == 503 and r, "a crash loop")
    assert body["servers"]["default"]["reasons"] == [
        "crash loop: the last 3 server processes exited with an error within 10 s of their "
        "start (last exit code 1)"]
    assert sample(scrape(base), "mcp_proxy_server_processes_exited_total", server="default",
                  code="1") == 3

    broken.unlink()  # fixed: one session that runs and ends cleanly ends the streak
    session = start_mcp_session(base)
    assert session.status_code == 200
    assert readyz(base)[0] == 503  # still running: no clean exit yet
    assert requests.delete(base + "/mcp", timeout=10, headers={
        "Mcp-Session-Id": session.headers["Mcp-Session-Id"]}).status_code == 200
    wait_for(lambda: readyz(base)[0] == 200, "the crash loop to end")


def test_gunicorn_serves_the_probes(tmp_path):
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as sink:  # port 0: gunicorn logs the port it got
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:0",
             "--graceful-timeout", "3", "mcp_proxy.wsgi:application"],
            env={**os.environ, "MCP_PROXY_ARGS": "--auth-token s3cret -- "
                 + shlex.join(RAW_SERVER)},
            stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True)

    def listening() -> str | None:
        assert gunicorn.poll() is None, log.read_text()
        found = re.search(r"Listening at: (http://\S+)", log.read_text())
        return found and found.group(1)

    try:
        base = wait_for(listening, "gunicorn to listen", timeout=20)
        for path in PROBES:
            assert requests.get(base + path, timeout=10).status_code == 200, path
        token = {"Authorization": "Bearer s3cret"}
        reader, endpoint = open_sse(base, headers=token)
        requests.post(endpoint, json=rpc("ping", 1), headers=token, timeout=10)
        assert reader.next_message()["id"] == 1
        samples = scrape(base)
        assert sample(samples, "mcp_proxy_messages_relayed_total", server="default",
                      direction="server_to_client", kind="response") == 1
        assert sample(samples, "mcp_proxy_sessions_open", server="default", transport="sse") == 1
        reader.close()
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(20)
        finally:
            if gunicorn.poll() is None:
                os.killpg(gunicorn.pid, signal.SIGKILL)
                gunicorn.wait(5)
