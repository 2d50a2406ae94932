"""The scaled-out deployment (deploy/): its nginx.conf run by real nginx on loopback in front
of real proxies sharing one real Redis, and its compose file checked against what it runs.

Only the upstream addresses, the listen port and the log, pid and temp paths of nginx.conf are
rewritten; every setting SSE needs is the file's own. nginx balances round-robin, so with two
proxies the POSTs of one session alternate between them: that needs the Redis routing.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, free_port, open_sse, rpc
from mcp_proxy.config.options import build_parser

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
CALLS = 20


def nginx_binary() -> str:
    """The path of nginx; fails (never skips) the test when it is not installed."""
    for path in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if path and os.access(path, os.X_OK):
            return path
    raise AssertionError("nginx not found: install Debian's nginx (make test does: .ci/deps)")


def loopback_conf(directory: Path, upstreams: list[str], port: int) -> Path:
    """deploy/nginx.conf for loopback: ``upstreams`` instead of the replicas, ``port``,
    and logs, pid and temp files in ``directory``; nothing else changes."""
    text = (DEPLOY / "nginx.conf").read_text()
    block = re.search(r"upstream mcp_proxy \{.*?\n    \}", text, re.S).group(0)
    replicas = re.findall(r"^\s*server \S+;\n", block, re.M)
    assert len(replicas) == 2, block  # the compose file's two replicas
    local = block.replace(replicas[0], "".join(f"        server {address};\n"
                                               for address in upstreams))
    local = local.replace(replicas[1], "")
    text = text.replace(block, local)
    text = re.sub(r"^(\s*)listen 8080;", rf"\g<1>listen 127.0.0.1:{port};", text, flags=re.M)
    text = re.sub(r"^error_log \S+", f"error_log {directory}/error.log", text, flags=re.M)
    text = re.sub(r"access_log \S+", f"access_log {directory}/access.log", text)
    temp = "".join(f"    {kind}_temp_path {directory}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + temp, 1)
    assert text.count(str(directory)) == 7, text  # every path is ours
    conf = directory / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_command(conf: Path) -> list[str]:
    directives = f"daemon off; pid {conf.parent}/nginx.pid;"
    if os.geteuid() == 0:  # else nginx's workers would run as nobody, locked out of our files
        directives += (f" user {pwd.getpwuid(os.geteuid()).pw_name}"
                       f" {grp.getgrgid(os.getegid()).gr_name};")
    return [nginx_binary(), "-p", str(conf.parent), "-c", str(conf), "-g", directives]


@pytest.fixture
def nginx(tmp_path):
    """Start nginx with ``nginx(upstreams)``: deploy/nginx.conf on a free loopback port in
    front of ``upstreams`` (host:port); returns its base URL. Stopped at teardown."""
    started: list[subprocess.Popen] = []

    def start(upstreams: list[str]) -> str:
        directory = tmp_path / "nginx"
        directory.mkdir()
        port = free_port()
        conf = loopback_conf(directory, upstreams, port)
        with open(directory / "stderr.log", "wb") as log:
            proc = subprocess.Popen(nginx_command(conf), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        started.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                logs = "".join(path.read_text(errors="replace")
                               for path in directory.glob("*.log"))
                assert proc.poll() is None, f"nginx exited {proc.returncode}:\n{logs}"
                assert time.monotonic() < deadline, f"nginx did not listen:\n{logs}"
                time.sleep(0.05)

    yield start
    for proc in started:
        proc.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def proxies(proxy_factory, redis_server, count: int) -> list[str]:
    """``count`` proxies (the CLI) sharing ``redis_server``; their host:port addresses."""
    started = [proxy_factory("--redis-url", redis_server.url, "--", *RAW_SERVER)
               for _ in range(count)]
    return [proxy.base.removeprefix("http://") for proxy in started]


def echo(n: int) -> dict:
    return rpc("tools/call", n, name="echo", arguments={"text": f"message {n}"})


def drive_sse(base: str) -> None:
    """One SSE session: every POST on a fresh connection gets 202, and every answer arrives
    on the session's stream, in order."""
    reader, endpoint = open_sse(base, timeout=20)
    try:
        for n in range(CALLS):
            answer = requests.post(endpoint, json=echo(n), timeout=20)
            assert answer.status_code == 202, (n, answer.status_code, answer.text)
        for n in range(CALLS):
            message = reader.next_message()
            assert message["id"] == n, message
            assert message["result"]["content"][0]["text"] == f"message {n}"
    finally:
        reader.close()


def result_of(answer: requests.Response) -> dict:
    """The one JSON-RPC message of a Streamable HTTP POST's answer, JSON or an SSE stream."""
    assert answer.status_code == 200, (answer.status_code, answer.text)
    if answer.headers["Content-Type"].startswith("application/json"):
        return answer.json()
    data = [line[5:].strip() for line in answer.text.splitlines() if line.startswith("data:")]
    messages = [json.loads(item) for item in data if item]
    assert len(messages) == 1, answer.text
    return messages[0]


def drive_streamable(base: str) -> None:
    """One Streamable HTTP session: initialize, then every call on a fresh connection answered."""
    init = requests.post(base + "/mcp", json=rpc("initialize", 0, **INIT_PARAMS),
                         headers=STREAM_HEADERS, timeout=20)
    assert result_of(init)["id"] == 0
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    initialized = requests.post(base + "/mcp", json=rpc("notifications/initialized", None),
                                headers=headers, timeout=20)
    assert initialized.status_code == 202, initialized.text
    for n in range(1, CALLS + 1):
        answer = result_of(requests.post(base + "/mcp", json=echo(n), headers=headers,
                                         timeout=20))
        assert answer["id"] == n and answer["result"]["content"][0]["text"] == f"message {n}"


def upstreams_used(tmp_path: Path, method: str) -> set[str]:
    """The replicas nginx sent ``method`` requests to (its access log names each)."""
    log = (tmp_path / "nginx" / "access.log").read_text()
    return set(re.findall(rf'"{method} [^"]*" \d+ \d+ upstream=(\S+)', log))


def test_nginx_conf_passes_nginx_t(tmp_path):
    directory = tmp_path / "nginx"
    directory.mkdir()
    conf = loopback_conf(directory, ["127.0.0.1:9", "127.0.0.1:10"], free_port())
    done = subprocess.run([*nginx_command(conf), "-t"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr


def test_nginx_conf_has_what_sse_needs():
    text = (DEPLOY / "nginx.conf").read_text()
    location = text[text.index("location / {"):]
    for directive in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                      "proxy_set_header Host $host;", "proxy_buffering off;",
                      "proxy_cache off;", "chunked_transfer_encoding on;"):
        assert directive in location, directive
    read_timeout = re.search(r"proxy_read_timeout (\d+)h;", location)
    assert read_timeout and int(read_timeout.group(1)) >= 1
    body = re.search(r"client_max_body_size (\d+)m;", text)
    assert body and int(body.group(1)) * 2**20 >= build_parser().parse_args(
        ["x"]).max_body_size  # the proxy's own limit answers first
    assert "non_idempotent" not in text  # a POST is never sent twice


def test_one_proxy_behind_nginx_streams_both_transports(nginx, proxy_factory, redis_server,
                                                        tmp_path):
    base = nginx(proxies(proxy_factory, redis_server, 1))
    drive_sse(base)
    drive_streamable(base)


def test_two_proxies_behind_nginx_share_sessions_through_redis(nginx, proxy_factory,
                                                               redis_server, tmp_path):
    upstreams = proxies(proxy_factory, redis_server, 2)
    base = nginx(upstreams)
    drive_sse(base)
    drive_streamable(base)
    assert upstreams_used(tmp_path, "POST") == set(upstreams)  # both proxies took POSTs


def test_compose_scale_file_matches_nginx_conf_and_the_image():
    compose = yaml.safe_load((DEPLOY / "compose.scale.yaml").read_text())
    services = compose["services"]
    password = "${MCP_PROXY_REDIS_PASSWORD:?set MCP_PROXY_REDIS_PASSWORD}"

    redis = services["redis"]
    assert redis["image"].startswith("redis:") and "ports" not in redis
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == password
    assert command[command.index("--save") + 1] == "" and "--appendonly" in command
    assert compose["networks"]["bus"]["internal"] is True
    assert redis["networks"] == ["bus"]

    upstream = re.findall(r"^\s*server (\S+);", (DEPLOY / "nginx.conf").read_text(), re.M)
    replicas = sorted(name for name in services if name.startswith("proxy-"))
    assert upstream == [f"{name}:8080" for name in replicas] and len(replicas) == 2
    for name in replicas:
        proxy = services[name]
        assert proxy["build"] == ".." and proxy["entrypoint"][:2] == ["/usr/bin/tini", "--"]
        assert proxy["entrypoint"][2:] + proxy["command"][:2] == [
            "gunicorn", "-c", "python:mcp_proxy.gunicorn_conf"]
        assert proxy["command"][-1] == "mcp_proxy.wsgi:application"
        env = proxy["environment"]
        assert env["MCP_PROXY_BIND"] == "0.0.0.0:8080"
        assert env["MCP_PROXY_REDIS_URL"] == f"redis://:{password}@redis:6379/0"
        ns = build_parser().parse_args(shlex.split(env["MCP_PROXY_ARGS"]))
        assert ns.host == "0.0.0.0" and ns.command_or_url == "uvx"
        assert "bus" in proxy["networks"] and "front" in proxy["networks"]

    balancer = services["nginx"]
    assert balancer["image"].startswith("nginx:")
    assert balancer["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert balancer["ports"] == ["127.0.0.1:8080:8080"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '"gunicorn[gevent]==' in dockerfile and "/usr/bin/tini" in dockerfile
