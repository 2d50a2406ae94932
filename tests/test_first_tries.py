"""The first tries of a new user (issue 19): every mistake in arguments fails at once, in
one line that names the value and the fix.

Everything runs through the real command in a subprocess.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from conftest import RAW_SERVER, ProxyProcess

LOG_PREFIX = r"^\S+ \S+ ERROR mcp_proxy\S*: "  # the logging format's date, time and level


def run_cli(*args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single line the command said, its log prefix cut; no traceback anywhere."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return re.sub(LOG_PREFIX, "", lines[0])


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
    (["--transport", "http", "http://127.0.0.1:9/mcp"],
     "argument --transport: invalid choice: 'http' (choose from 'sse', 'streamablehttp', "
     "'auto')"),
])
def test_a_mistaken_argument_is_one_line_naming_the_fix(args, line):
    done = run_cli(*args, timeout=15)
    assert done.returncode == 2
    assert one_error_line(done) == f"mcp-proxy: error: {line}; see mcp-proxy --help"


def test_oauth_callback_port_zero_is_refused(tmp_path):
    done = run_cli("--oauth-callback-port", "0", "http://127.0.0.1:9/mcp", timeout=15)
    assert done.returncode == 1
    assert one_error_line(done) == ("--oauth-callback-port 0: the sign-in callback needs a "
                                    "fixed port (1 to 65535); leave the flag out for a "
                                    "stable one")


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


# --- --help says what the code does ----------------------------------------------------------

def test_help_names_what_the_code_accepts():
    text = " ".join(run_cli("--help").stdout.split())
    for accepted in ("redis://, rediss:// (TLS) or unix://", '"cwd", "enabled", "shared", '
                     '"maxSessions"',
                     "--sse-port PORT deprecated: use --port"):
        assert accepted in text, accepted
