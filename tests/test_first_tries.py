"""The first tries of a new user (issue 19): client mode's default transport finds the
server's, for every kind of desktop client; every mistake in arguments fails at once, in one
line that names the value and the fix; only what can heal is retried.

Everything runs through the real command in a subprocess; the desktop clients are the
official Python SDK (tests/sdk_driver.py) and the MCP Inspector's CLI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest
from test_client_modern import sdk_remote  # noqa: F401 (a fixture)
from test_inspector import inspector_cli, run_inspector  # noqa: F401 (a fixture)

from conftest import INIT_PARAMS, RAW_SERVER, ProxyProcess, Scripted, rpc, run_driver
from mcp_proxy.config.schema import config_schema

PROXY = shlex.join([sys.executable, "-m", "mcp_proxy"])  # no --transport: the default
MODERN = "2026-07-28"
LOG_PREFIX = r"^\S+ \S+ ERROR mcp_proxy\S*: "  # the logging format's date, time and level


def run_cli(*args: str, stdin: str = "", timeout: float = 30,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout, env=env)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single line the command said, its log prefix cut; no traceback anywhere."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return re.sub(LOG_PREFIX, "", lines[0])


# --- the default transport, for every kind of desktop client ------------------------------

@pytest.mark.parametrize("transport, era, mode, args", [
    ("sse", "both", "legacy", ""),  # an SSE-only server: the 2025-era client
    ("sse", "both", "auto", ""),  # ... and the dual-era one (bridged to the 2025-era remote)
    ("sse", "both", "auto", "--transport auto"),  # as said, not only by default
    ("streamable-http", "legacy", "auto", ""),  # dual-era client, 2025-era Streamable server
    ("streamable-http", "both", "legacy", ""),
    ("streamable-http", "both", "auto", ""),
    ("streamable-http", "both", MODERN, ""),
])
def test_the_default_transport_finds_the_servers(sdk_remote, transport, era,  # noqa: F811
                                                 mode, args):
    report = run_driver("stdio", f"{PROXY} {args} {sdk_remote(era, transport)}", "echo",
                        "sample", extra=("--mode", mode))
    assert (report["echo"], report["sample"]) == ("hello", "sampled:hi there"), report
    # a client that starts in 2026-07-28 (auto or modern) stays in it: a remote that speaks
    # only the 2025 era (over SSE, or a 2025-era Streamable one) is bridged (legacy_remote)
    modern = mode != "legacy"
    assert (report["session"]["protocolVersion"] == MODERN) == modern, report["session"]


def test_the_inspector_cli_of_both_eras_reaches_an_sse_only_server(inspector_cli,  # noqa: F811
                                                                   sdk_remote,  # noqa: F811
                                                                   tmp_path):
    url = sdk_remote("both", "sse")
    for era, args in (("auto", []), ("auto", ["--transport", "auto"]), ("legacy", [])):
        called = run_inspector(inspector_cli, tmp_path, "--transport", "stdio",
                               "--protocol-era", era, "--method", "tools/call",
                               "--tool-name", "echo", "--tool-arg", f"text={era}",
                               "--", sys.executable, "-m", "mcp_proxy", *args, url)
        assert called["content"] == [{"type": "text", "text": era}], (era, args)


def test_neither_transport_answers_the_first_request_and_exits(clients):
    """A URL that is neither endpoint (here, our own server mode's /status): the client's
    initialize gets the reason, the process exits 1 at once."""
    server = ProxyProcess("--", *RAW_SERVER).started()
    try:
        client = clients(server.base + "/status")
        answer = client.call(rpc("initialize", 0, **INIT_PARAMS))
        assert client.proc.wait(15) == 1
    finally:
        server.stop()
    text = (f"{server.base}/status speaks neither Streamable HTTP (initialize answered 405) "
            f"nor SSE: GET {server.base}/status: answered application/json, not "
            f"text/event-stream: retrying cannot help; check the URL (the server's "
            f"Streamable HTTP or SSE endpoint) and the -H headers")
    assert answer["error"]["message"] == text
    assert text in client.stderr()


# --- what cannot heal fails at once, in one line ---------------------------------------------

@pytest.mark.parametrize("url, line", [
    ("http://[::1/sse", "URL 'http://[::1/sse' is malformed: '[' without ']' (an IPv6 address "
                        "is written in brackets: http://[::1]:8080/mcp)"),
    ("http://", "URL 'http://' names no host: write it as http://HOST:PORT/PATH, e.g. "
                "http://127.0.0.1:8080/mcp"),
    ("http://:18080/sse", "URL 'http://:18080/sse' names no host: write it as "
                          "http://HOST:PORT/PATH, e.g. http://127.0.0.1:8080/mcp"),
    ("http://127.0.0.1:99999/sse", "URL 'http://127.0.0.1:99999/sse': port '99999' is not a "
                                   "port (1 to 65535): write it as http://HOST:PORT/PATH, "
                                   "e.g. http://127.0.0.1:8080/mcp"),
    ("http://user:pw@127.0.0.1:0/sse?key=s3cret", "URL 'http://***@127.0.0.1:0/sse?***': port "
                                                  "'0' is not a port (1 to 65535): write it "
                                                  "as http://HOST:PORT/PATH, e.g. "
                                                  "http://127.0.0.1:8080/mcp"),
])
def test_a_url_that_cannot_work_fails_at_once(url, line):
    done = run_cli("--start-timeout", "60", url, timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == line


@pytest.mark.parametrize("args, line", [
    (["--port", "99999", "echo"], "argument --port: '99999' is not a port: give 0 to 65535 "
                                  "(0 picks a free one)"),
    (["--port", "-5", "echo"], "argument --port: '-5' is not a port: give 0 to 65535 (0 picks "
                               "a free one)"),
    (["--sse-port", "http", "echo"], "argument --sse-port: 'http' is not a port: give 0 to "
                                     "65535 (0 picks a free one)"),
    (["--prot", "18085", "http://127.0.0.1:9/mcp"],
     "unrecognized arguments: --prot (flags are never abbreviated: write --protocol-era)"),
    (["--transprot", "sse", "http://127.0.0.1:9/mcp"],
     "unrecognized arguments: --transprot (did you mean --transport?)"),
    (["--host", "", "--", "echo"], "argument --host: an empty address would listen on every "
                                   "interface: give 127.0.0.1, or 0.0.0.0 to listen on all"),
    (["--transport", "http", "http://127.0.0.1:9/mcp"],
     "argument --transport: invalid choice: 'http' (choose from 'sse', 'streamablehttp', "
     "'auto')"),
])
def test_a_mistaken_argument_is_one_line_naming_the_fix(args, line):
    done = run_cli(*args, timeout=15)
    assert done.returncode == 2
    assert one_error_line(done) == f"mcp-proxy: error: {line}; see mcp-proxy --help"


@pytest.mark.parametrize("header, line", [
    (["Bad Header", "v"], "-H 'Bad Header': not a header name (letters, digits and "
                          "!#$%&'*+-.^_`|~, no spaces or colon): e.g. -H Authorization "
                          "'Bearer TOKEN'"),
    (["X-Key", "s3cret\nmore"], "-H 'X-Key': the value has a line break, a NUL or leading "
                                "blanks: give it on one line, trimmed"),
    (["X-Key", "s3cr€t"], "-H 'X-Key': the value has a character an HTTP header cannot carry "
                          "(at position 4; only Latin-1): percent-encode it, or give its "
                          "ASCII form"),
])
def test_a_header_no_request_can_carry_is_refused(header, line):
    done = run_cli("-H", *header, "--start-timeout", "60", "http://127.0.0.1:9/mcp",
                   timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == line  # and never the value, which may be a secret


@pytest.mark.parametrize("args, env, what", [
    ([], {"API_ACCESS_TOKEN": "t\u00f6k\u20acn"}, "API_ACCESS_TOKEN"),
    (["--username", "\u7528\u6237", "--password", "pw"], {}, "--username"),
    (["--username", "me", "--password", "p\u00e4ss\u2603"], {}, "--password"),
])
def test_a_credential_http_cannot_carry_is_one_line_without_the_secret(args, env, what):
    """requests sends header values and Basic credentials as Latin-1: a character beyond it
    was a UnicodeEncodeError traceback on the first request."""
    done = run_cli(*args, "--start-timeout", "60", "http://127.0.0.1:9/mcp", timeout=15,
                   env={**os.environ, **env})
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith(f"{what} has a character an HTTP header cannot carry (at position ")
    for secret in (*env.values(), *args[1::2]):
        assert secret in ("pw", "me") or secret not in done.stderr


@pytest.mark.parametrize("entry, line", [
    ({"command": "echo", "cwd": 5}, "$.mcpServers.a.cwd: expected a string, got a whole number"),
    ({"command": "echo", "enabled": "no"},
     "$.mcpServers.a.enabled: expected true or false, got a string"),
    ({"command": "echo", "cwd": "/no/such/dir"},
     "server 'a': working directory (--cwd) '/no/such/dir' is not a directory"),
])
def test_a_config_file_mistake_names_the_server_and_field(tmp_path, entry, line):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"a": entry}}))
    done = run_cli("--named-server-config", str(config), timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == (line if "working" in line else f"{config}: {line}")


def test_an_unknown_config_field_is_named_not_silently_ignored(tmp_path):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"a": {"command": "echo", "arg": ["x"]}}}))
    server = ProxyProcess("--named-server-config", str(config)).started()
    try:
        known = ", ".join(sorted(config_schema()["$defs"]["server"]["properties"]))
        assert known.startswith("args, audit, ")  # the schema's fields, each named
        server.expect(f"WARNING mcp_proxy: {re.escape(str(config))}: \\$\\.mcpServers\\.a: "
                      f"ignoring 'arg' \\(known: {re.escape(known)}\\)$")
    finally:
        server.stop()


def test_oauth_callback_port_zero_is_refused(tmp_path):
    done = run_cli("--oauth-callback-port", "0", "http://127.0.0.1:9/mcp", timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == ("--oauth-callback-port 0: the sign-in callback needs a "
                                    "fixed port (1 to 65535); leave the flag out for a "
                                    "stable one")


def test_oauth_device_with_no_oauth_is_refused():
    done = run_cli("--no-oauth", "--oauth-device", "http://127.0.0.1:9/mcp", timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == ("--oauth-device is a way to sign in, and --no-oauth turns "
                                    "sign-in off: give one of them")


def test_a_taken_port_is_named():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli("--port", str(port), "--", *RAW_SERVER, timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == (f"cannot listen on 127.0.0.1:{port}: Address already in "
                                    f"use: stop what listens there, or give another --port "
                                    f"(0 picks a free one)")


def test_the_deprecated_sse_port_warns_naming_its_replacement():
    server = ProxyProcess("--sse-port", "0", "--sse-host", "127.0.0.1", "--",
                          *RAW_SERVER).started()
    try:
        server.expect(r"WARNING mcp_proxy: --sse-port is deprecated and will go: use --port$")
        server.expect(r"WARNING mcp_proxy: --sse-host is deprecated and will go: use --host$")
    finally:
        server.stop()


class Refusing(Scripted):
    """Answers every request with the status in ``server.status``, counting them."""

    def _refuse(self) -> None:
        self.server.hits += 1
        self.reply(self.server.status, b'{"detail": "no"}')

    do_GET = do_POST = _refuse


@pytest.mark.parametrize("transport", ["sse", "streamablehttp", "auto"])
def test_a_4xx_that_cannot_heal_fails_at_once(scripted, transport):
    server, base = scripted(Refusing, status=400, hits=0)
    done = run_cli("--transport", transport, "--start-timeout", "60", base + "/sse",
                   stdin=json.dumps(rpc("initialize", 0, **INIT_PARAMS)) + "\n", timeout=20)
    assert done.returncode == (0 if transport == "streamablehttp" else 1), done.stderr
    assert "retrying" not in done.stderr.replace("retrying cannot help", "")
    assert server.hits <= 3  # the probe GET, the initialize POST, the SSE GET (auto)
    if transport != "streamablehttp":  # there the POST's 400 is the initialize's answer
        assert (f"GET {base}/sse: HTTP 400 Bad Request: retrying cannot help; check the URL "
                f"(the server's Streamable HTTP or SSE endpoint) and the -H headers"
                ) in done.stderr


def test_sse_in_front_of_a_streamable_endpoint_says_to_leave_it_out():
    server = ProxyProcess("--", *RAW_SERVER).started()
    try:
        done = run_cli("--transport", "sse", server.base + "/mcp", timeout=20)
    finally:
        server.stop()
    assert done.returncode == 1
    assert one_error_line(done) == (
        f"GET {server.base}/mcp: HTTP 400 BAD REQUEST: retrying cannot help; check the URL "
        f"(the server's Streamable HTTP or SSE endpoint) and the -H headers; if it is a "
        f"Streamable HTTP endpoint, leave out --transport sse")


@pytest.mark.parametrize("status", [404, 408, 429])
def test_a_4xx_that_may_heal_is_retried(scripted, status):
    server, base = scripted(Refusing, status=status, hits=0)
    done = run_cli("--transport", "sse", "--start-timeout", "1", base + "/sse", timeout=20)
    assert done.returncode == 1
    assert f"GET {base}/sse: HTTP {status}" in done.stderr and "; retrying" in done.stderr
    assert server.hits >= 2


# --- credentials ---------------------------------------------------------------------------

@pytest.fixture
def token_remote():
    """Our own server mode, taking a plain bearer token (no OAuth metadata anywhere)."""
    server = ProxyProcess("--auth-token", "t0ken", "--", *RAW_SERVER).started()
    yield server
    server.stop()


def test_no_token_for_a_plain_bearer_remote_says_how_to_pass_one(token_remote, clients,
                                                                  tmp_path):
    url = token_remote.base + "/mcp"
    client = clients("--oauth-no-browser", url, env={"HOME": str(tmp_path)})
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS))
    assert answer["error"]["message"] == (
        f"client registration at {token_remote.base}/register refused (HTTP 404): {url} "
        f"answered 401 but publishes no OAuth metadata; if it takes a plain bearer token, "
        f"pass a token with -H Authorization 'Bearer TOKEN' or API_ACCESS_TOKEN=TOKEN")
    assert client.close() == 0


@pytest.mark.parametrize("args, said", [
    ([], "the remote wants credentials (401) and we sent no Authorization header: pass a "
         "token with -H Authorization 'Bearer TOKEN' or API_ACCESS_TOKEN=TOKEN"),
    (["-H", "Authorization", "Bearer wrong"], "the remote refused our credentials (401)"),
])
def test_a_401_says_whether_credentials_were_sent(token_remote, clients, args, said):
    url = token_remote.base + "/mcp"
    client = clients("--no-oauth", *args, url)
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS))
    assert client.proc.wait(15) == 1
    prefix = f"authentication failed: GET {url}: "
    assert answer["error"]["message"] == prefix + said
    assert client.stderr().endswith(f"ERROR mcp_proxy.client.run: {prefix}{said}\n")


# --- --help says what the code does ----------------------------------------------------------

def test_help_names_what_the_code_accepts():
    text = " ".join(run_cli("--help").stdout.split())
    for accepted in ("redis://, rediss:// (TLS) or unix://", '"cwd", "enabled", "shared", '
                     '"maxSessions"', "default auto: Streamable HTTP, then SSE",
                     "--sse-port PORT deprecated: use --port"):
        assert accepted in text, accepted
