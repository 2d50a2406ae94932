"""Sign-in that cannot loop or race, with the real CLI against the scripted authorization
server: a refresh token revoked at the server, a fresh token refused again, two instances
started together, one of them SIGKILLed mid sign-in, and a callback port held by a stranger.
Browser tabs are counted by the fake browser (``oauth_kit.tabs``)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
from oauth_kit import proxy, tabs, tools_of

from conftest import INIT_PARAMS, rpc
from mcp_proxy.upstream.oauth.browser import default_port
from mcp_proxy.upstream.oauth.store import server_key

pytest_plugins = ["oauth_kit"]

REFUSED = "refused the token its sign-in just gave"


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        threading.Event().wait(0.05)
    raise AssertionError(f"no {what} within {timeout:g} s")


def tokens_on_disk(env: dict) -> list[Path]:
    return list((Path(env["MCP_PROXY_CONFIG_DIR"]) / "oauth").glob("*/tokens.json"))


def signed_in_once(auth_env, remote, clients):
    """A server, and a cache holding its tokens (one tab, by a run that ended)."""
    server = remote()
    first = proxy(clients, server)
    assert tools_of(first) == ["echo", "admin"]
    assert first.close() == 0
    assert tabs(auth_env) == [first.proc.pid] and tokens_on_disk(auth_env)
    return server, first


def test_revoked_refresh_token_means_one_new_sign_in(auth_env, remote, clients):
    server, first = signed_in_once(auth_env, remote, clients)
    server.revoke_refresh()  # the held token is refused, its refresh is invalid_grant
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert client.call(rpc("tools/call", 2, name="echo", arguments={"x": 1}))["result"]
    assert server.refused_refreshes == 1
    assert tabs(auth_env) == [first.proc.pid, client.proc.pid]  # one tab, one sign-in
    assert "invalid_grant" in client.stderr()
    assert client.close() == 0
    assert tokens_on_disk(auth_env)  # the new sign-in's tokens, for the next run


def test_revoked_then_refused_again_ends_the_run_after_one_tab(auth_env, remote, clients):
    server, first = signed_in_once(auth_env, remote, clients)
    server.revoke_refresh()
    server.sw["refuse_fresh"] = True  # and the new sign-in's token is refused too
    client = proxy(clients, server)
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)
    assert REFUSED in answer["error"]["message"], answer
    assert client.proc.wait(15) == 1  # the run ends: no other tab, no other request
    assert tabs(auth_env) == [first.proc.pid, client.proc.pid]
    stderr = client.stderr()
    assert [line for line in stderr.splitlines() if REFUSED in line] == [
        line for line in stderr.splitlines() if "stopped:" in line]
    assert len([line for line in stderr.splitlines() if REFUSED in line]) == 1, stderr
    assert "Traceback" not in stderr
    assert not tokens_on_disk(auth_env)  # the refused tokens are not kept
    assert server.refused_refreshes == 1


def test_a_fresh_token_refused_at_once_ends_the_run(auth_env, remote, clients):
    server = remote(accept=False)  # a broken deployment: every token refused
    client = proxy(clients, server)
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)
    assert REFUSED in answer["error"]["message"], answer
    assert client.proc.wait(15) == 1
    assert tabs(auth_env) == [client.proc.pid]
    assert not tokens_on_disk(auth_env)


def test_sse_remote_refusing_the_fresh_token_ends_at_start(auth_env, remote, clients):
    server = remote(accept=False)
    server.sw["prm_resource"] = server.base + "/"
    client = clients("--transport", "sse", server.base + "/sse")
    client.send(rpc("initialize", 0, **INIT_PARAMS))
    assert REFUSED in client.recv(timeout=30)["error"]["message"]
    assert client.proc.wait(15) == 1
    assert tabs(auth_env) == [client.proc.pid]


def start_pair(clients, server, *envs: dict):
    pair = [clients("--transport", "streamablehttp", server.base + "/mcp", env=env)
            for env in envs]
    for client in pair:
        client.send(rpc("initialize", 0, **INIT_PARAMS))
    return pair


def test_two_instances_started_together_open_one_tab(auth_env, remote, clients):
    server = remote()
    pair = start_pair(clients, server, {}, {})
    for client in pair:
        assert client.recv(timeout=40)["result"]["serverInfo"]["name"] == "oauth-scripted"
        client.send(rpc("notifications/initialized", None))
        assert client.call(rpc("tools/list", 1))["result"]
    assert len(tabs(auth_env)) == 1 and len(server.registrations) == 1
    waited = [c for c in pair if "waiting for another mcp-proxy" in c.stderr()]
    assert len(waited) == 1 and "another mcp-proxy just completed" in waited[0].stderr()


def test_two_instances_with_a_revoked_refresh_token_open_one_tab(auth_env, remote, clients):
    server, first = signed_in_once(auth_env, remote, clients)
    server.revoke_refresh()
    pair = start_pair(clients, server, {}, {})
    for client in pair:
        assert client.recv(timeout=40)["result"]["serverInfo"]["name"] == "oauth-scripted"
        client.send(rpc("notifications/initialized", None))
        assert client.call(rpc("tools/list", 1))["result"]
    assert len(tabs(auth_env)) == 2  # the first run's, and one for the pair
    assert len(server.registrations) == 1


def test_an_instance_killed_mid_sign_in_does_not_block_the_other(auth_env, remote, clients):
    server = remote()
    walker = clients("--transport", "streamablehttp", server.base + "/mcp",
                     env={"FAKE_BROWSER_MODE": "ignore"})  # its user walks away
    walker.send(rpc("initialize", 0, **INIT_PARAMS))
    wait_for(lambda: tabs(auth_env) == [walker.proc.pid], what="first tab")
    other = clients("--transport", "streamablehttp", server.base + "/mcp")
    other.send(rpc("initialize", 0, **INIT_PARAMS))
    wait_for(lambda: "waiting for another mcp-proxy" in other.stderr(), what="lock wait")
    assert tabs(auth_env) == [walker.proc.pid]  # it waits for the lock: no second tab
    walker.proc.send_signal(signal.SIGKILL)  # mid sign-in, holding the lock
    assert walker.proc.wait(10) == -signal.SIGKILL
    answer = other.recv(timeout=40)  # the kernel released the lock: it signs in itself
    assert answer["result"]["serverInfo"]["name"] == "oauth-scripted", answer
    assert tabs(auth_env) == [walker.proc.pid, other.proc.pid]
    assert "gave up waiting" not in other.stderr()
    assert other.close() == 0


@pytest.fixture
def stranger():
    """A listening socket on 127.0.0.1 (another program holding a port)."""
    held = []

    def hold(port: int = 0) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        held.append(sock)
        return sock.getsockname()[1]

    yield hold
    for sock in held:
        sock.close()


def test_callback_port_held_by_a_stranger_is_one_line_naming_it(auth_env, remote, clients,
                                                                stranger):
    server = remote()
    port = stranger()
    client = proxy(clients, server, "--oauth-callback-port", str(port))
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)
    message = answer["error"]["message"]
    assert f"port {port} on 127.0.0.1, in use by another program" in message, message
    assert "--oauth-callback-port" in message and "\n" not in message
    assert tabs(auth_env) == []  # nothing opened: the port is taken before the browser
    assert "Traceback" not in client.stderr()
    assert client.close() == 0


def test_derived_callback_port_held_by_a_stranger_moves_up(auth_env, remote, clients,
                                                           stranger):
    server = remote()
    url = server.base + "/mcp"
    port = default_port(server_key(url))
    try:
        stranger(port)
    except OSError:
        pytest.skip(f"port {port} is in use here already")
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    redirect = server.authorize_params[0]["redirect_uri"]
    assert redirect.startswith("http://127.0.0.1:") and redirect != \
        f"http://127.0.0.1:{port}/callback"
    assert len(tabs(auth_env)) == 1


def cache_folder(env: dict, server) -> Path:
    folder = Path(env["MCP_PROXY_CONFIG_DIR"]) / "oauth" / server_key(server.base + "/mcp")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("content", [
    b"[" * 100_000, b"\xff\xfe{", b"[]", b'{"access_token": 5, "refresh_token": "rt-x"}',
    b'{"access_token": "at-x\\r\\nX-Injected: 1", "refresh_token": "rt-x"}',
    b'{"access_token": "at-x", "expires_at": "soon", "scope": ["mcp"]}',
    b'{"access_token": "at-x", "expires_at": 1e999, "issuer": 7, "refresh_token": "rt-x"}',
], ids=["deep", "not-utf8", "list", "number", "crlf", "types", "infinite"])
def test_a_hostile_token_cache_is_ignored_and_replaced(auth_env, remote, clients, content):
    server = remote()
    (cache_folder(auth_env, server) / "tokens.json").write_bytes(content)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert len(tabs(auth_env)) == 1 and "Traceback" not in client.stderr()
    assert "oauth cache: ignoring" in client.stderr()
    assert client.close() == 0
    record = json.loads((cache_folder(auth_env, server) / "tokens.json").read_text())
    assert record["access_token"] in server.tokens


def test_a_lock_that_cannot_be_opened_is_one_line(auth_env, remote, clients):
    server = remote()
    (cache_folder(auth_env, server) / "lock").mkdir()  # a directory where the lock file goes
    client = proxy(clients, server)
    message = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)["error"]["message"]
    assert message.startswith("cannot use the sign-in cache's lock file ") and "\n" not in \
        message, message
    assert tabs(auth_env) == [] and "Traceback" not in client.stderr()
    assert client.close() == 0
