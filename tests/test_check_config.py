"""A config that checks itself (issue 21), through the real command in a subprocess:
``--check-config`` and ``--print-config`` on good and broken files, ``${VAR}`` reaching a
real server, and what used to fail only at spawn (a NUL, an '=' in a name) refused at start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from test_deploy import call_tool

from conftest import RAW_SERVER, SDK_SERVER, run_driver

LOG_PREFIX = r"^\S+ \S+ ERROR mcp_proxy: "


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def config(tmp_path, servers: dict, name: str = "servers.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"mcpServers": servers}))
    return str(path)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [re.sub(r"^mcp-proxy: error: ", "", line) for line in done.stderr.splitlines()]


def test_check_config_on_a_good_file_says_ok_in_one_line(tmp_path):
    path = config(tmp_path, {
        "fetch": {"command": "${PY}", "args": RAW_SERVER[1:], "shared": True},
        "files": {"command": "python3", "env": {"ROOT": "${ROOT_DIR:-/srv}"}},
        "old": {"command": "no-such-command", "enabled": False},
    })
    done = run_cli("--named-server-config", path, "--check-config", env={"PY": sys.executable})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"OK: 2 named (fetch, files) from {path}; every command found\n"


def test_check_config_with_the_default_server_and_client_mode():
    done = run_cli("--check-config", "--", *RAW_SERVER)
    assert (done.returncode, done.stdout) == (0, "OK: the default server; every command found\n")
    done = run_cli("--check-config", "https://user:pw@example.com/mcp?key=k")
    # client mode: stdout is the protocol channel, so the OK goes to stderr
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "", "OK: client mode, remote https://user:***@example.com/mcp?key=*** (auto)\n")
    done = run_cli("--check-config", "http://[::1/mcp")
    assert done.returncode == 1 and len(error_lines(done)) == 1


def test_check_config_on_a_broken_file_prints_each_problem_and_exits_1(tmp_path):
    path = tmp_path / "servers.json"
    path.write_text('{"mcpServers": {"a b": {"command": "x", "args": [1]},'
                    ' "c": {"command": "x", "env": {"K=V": "1", "T": "${NOT_SET_HERE}"}},'
                    ' "d": {"command": "x", "maxSessions": 0}, "e": {"cwd": "/"},'
                    ' "z": {"command": "y"}, "z": {"command": "y"}}}')
    done = run_cli("--named-server-config", str(path), "--check-config")
    assert done.returncode == 1 and done.stdout == ""
    assert error_lines(done) == [f"{path}: {line}" for line in [
        '$.mcpServers: "z" is given more than once',
        "$.mcpServers.c.env.T: ${NOT_SET_HERE} is not set: set it, or give a default with "
        "${NOT_SET_HERE:-default}",
        "$.mcpServers[\"a b\"]: a server name is ASCII letters, digits, '-', '_' or '.' "
        "(and not '.' or '..')",
        '$.mcpServers["a b"].args[0]: expected a string, got a whole number',
        "$.mcpServers.c.env[\"K=V\"]: an environment variable name is not empty and has no "
        "'=' or NUL",
        "$.mcpServers.d.maxSessions: must be at least 1",
        '$.mcpServers.e: "command" is required',
    ]]


def test_check_config_names_every_command_not_found_and_the_unset_variable(tmp_path):
    path = config(tmp_path, {"a": {"command": "no-such-command-1"},
                             "b": {"command": "python3", "cwd": str(tmp_path / "none")},
                             "c": {"command": "python3", "args": ["${NOT_SET_HERE}"]}})
    done = run_cli("--named-server-config", path, "--check-config")
    assert done.returncode == 1
    assert error_lines(done) == [f"{path}: $.mcpServers.c.args[0]: ${{NOT_SET_HERE}} is not "
                                 f"set: set it, or give a default with ${{NOT_SET_HERE:-default}}"]
    path = config(tmp_path, {"a": {"command": "no-such-command-1"},
                             "b": {"command": "python3", "cwd": str(tmp_path / "none")}})
    done = run_cli("--named-server-config", path, "--check-config")
    assert done.returncode == 1
    assert error_lines(done) == [
        "server 'a': command 'no-such-command-1' not found on PATH",
        f"server 'b': working directory (--cwd) '{tmp_path / 'none'}' is not a directory"]


def test_print_config_expands_and_masks(tmp_path):
    path = config(tmp_path, {
        "gh": {"command": "npx", "args": ["-y", "server-github", "--token", "${GH}",
                                          "--home=${HOME}"],
               "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GH}", "LOG": "${LOG_LEVEL:-info}",
                       "URL": "https://bot:${PASSWORD_OF_BOT}@git.example/api"}},
        "off": {"command": "${UNSET_AND_DISABLED}", "enabled": False}})
    done = run_cli("--named-server-config", path, "--print-config",
                   env={"GH": "ghp_verysecret", "HOME": "/home/me", "PASSWORD_OF_BOT": "hunter2"})
    assert (done.returncode, done.stderr) == (0, "")
    assert "ghp_verysecret" not in done.stdout and "hunter2" not in done.stdout
    assert json.loads(done.stdout) == {"mcpServers": {
        "gh": {"command": "npx", "args": ["-y", "server-github", "--token", "***",
                                          "--home=/home/me"],
               "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "***", "LOG": "info", "URL": "***"}},
        "off": {"command": "${UNSET_AND_DISABLED}", "enabled": False}}}


def test_print_config_refusals(tmp_path):
    done = run_cli("--print-config", "--", *RAW_SERVER)
    assert (done.returncode, error_lines(done)) == (
        1, ["--print-config prints the --named-server-config file: give one"])
    path = config(tmp_path, {"a": {"command": "x", "env": {"A": "${NOT_SET_HERE}"}}})
    done = run_cli("--named-server-config", path, "--print-config")
    assert done.returncode == 1 and done.stdout == ""
    assert error_lines(done) == [f"{path}: $.mcpServers.a.env.A: ${{NOT_SET_HERE}} is not set: "
                                 f"set it, or give a default with ${{NOT_SET_HERE:-default}}"]
    good = config(tmp_path, {"a": {"command": "x"}}, "good.json")
    done = run_cli("--named-server-config", good, "--print-config", "https://example.com/mcp")
    assert (done.returncode, done.stdout, error_lines(done)) == (
        1, "", ["--print-config prints server mode's config file: leave out the URL"])
    done = run_cli("--named-server-config", path, "--print-config", "--check-config")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("entry, line", [
    ({"env": {"A=B": "1"}}, '$.mcpServers.a.env["A=B"]: an environment variable name'),
    ({"env": {"A": "x\0y"}}, "$.mcpServers.a.env.A: must not contain a NUL character"),
    ({"args": ["x\0"]}, "$.mcpServers.a.args[0]: must not contain a NUL character"),
    ({"env": {"A": "${NOT_SET_HERE}"}}, "$.mcpServers.a.env.A: ${NOT_SET_HERE} is not set"),
])
def test_what_failed_at_spawn_is_refused_at_start(tmp_path, entry, line):
    path = config(tmp_path, {"a": {"command": sys.executable, **entry}})
    done = run_cli("--named-server-config", path)
    assert done.returncode == 1
    lines = [re.sub(LOG_PREFIX, "", text) for text in error_lines(done)]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {line}"), lines


def test_an_env_name_with_equals_on_the_command_line_is_refused_at_start():
    done = run_cli("-e", "A=B", "1", "--", *RAW_SERVER)
    assert done.returncode == 1
    assert [re.sub(LOG_PREFIX, "", text) for text in error_lines(done)] == [
        "environment variable 'A=B': a name is not empty and has no '=' or NUL, a value has "
        "no NUL"]


def test_variables_reach_a_real_server(proxy_factory, tmp_path):
    path = config(tmp_path, {
        "raw": {"command": "${PY}", "args": RAW_SERVER[1:],
                "env": {"MINE": "${MINE_VALUE}", "OTHER": "${UNSET_HERE:-fallback}",
                        "LITERAL": "$${MINE_VALUE}"}},
        "sdk": {"command": "${PY}", "args": ["${SDK_SCRIPT}"]}})
    proxy = proxy_factory("--named-server-config", path,
                          env={"PY": sys.executable, "MINE_VALUE": "from the environment",
                               "SDK_SCRIPT": SDK_SERVER[1]})
    seen = json.loads(call_tool(proxy.base + "/servers/raw", "environ", {}))
    assert (seen["MINE"], seen["OTHER"], seen["LITERAL"]) == (
        "from the environment", "fallback", "${MINE_VALUE}")
    report = run_driver("streamable", proxy.base + "/servers/sdk/mcp", "echo")
    assert report["echo"] == "hello"
