"""Client mode signs in to OAuth-protected remotes: the browser flow end to end, the cache."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
from oauth_kit import proxy, sign_ins, tools_of, visits

from conftest import rpc, run_driver

pytest_plugins = ["oauth_kit"]


def test_first_sign_in_through_the_sdk_then_reuse_without_browser(auth_env, remote,
                                                                   clients):
    server = remote()
    target = f"{sys.executable} -m mcp_proxy --transport streamablehttp {server.base}/mcp"
    report = run_driver("stdio", target, "tools", "echo")
    assert report["tools"] == ["echo", "admin"], report
    assert sign_ins(auth_env) == 1
    assert any(url.startswith("http://127.0.0.1:") and "/callback?code=" in url
               for url in visits(auth_env))
    sent = server.authorize_params[0]
    assert sent["code_challenge_method"] == "S256"
    assert sent["resource"] == server.base + "/mcp"
    assert sent["scope"] == "mcp offline_access"  # PRM scopes, offline_access advertised
    assert server.registrations[0]["token_endpoint_auth_method"] == "none"
    assert server.registrations[0]["application_type"] == "native"

    client = proxy(clients, server)  # a second start: the cached tokens, no browser
    assert tools_of(client) == ["echo", "admin"]
    assert client.close() == 0
    assert sign_ins(auth_env) == 1 and len(server.registrations) == 1


def test_cache_files_are_private(auth_env, remote, clients):
    server = remote()
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert client.close() == 0
    root = Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth"
    folders = list(root.iterdir())
    assert len(folders) == 1
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(folders[0].stat().st_mode) == 0o700
    names = sorted(p.name for p in folders[0].iterdir())
    assert "tokens.json" in names and "server.json" in names
    assert any(name.startswith("client-") for name in names)
    for path in folders[0].iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    tokens = json.loads((folders[0] / "tokens.json").read_text())
    assert tokens["access_token"] in server.tokens


def test_no_secret_in_the_logs(auth_env, remote, clients):
    server = remote(auth_methods=["client_secret_post"], expires_in=61)
    client = proxy(clients, server, "--debug")
    assert tools_of(client) == ["echo", "admin"]
    time.sleep(1.5)  # within the refresh leeway: the next request refreshes
    assert client.call(rpc("tools/list", 2))["result"]
    assert client.close() == 0
    assert server.refreshes == 1
    log = client.stderr()
    secrets_seen = [r["client_secret"] for r in server.registered.values()]
    secrets_seen += list(server.tokens) + [t.get("refresh_token") for t in
                                           server.token_requests if t.get("refresh_token")]
    secrets_seen += [t["code"] for t in server.token_requests if t.get("code")]
    secrets_seen += [t["code_verifier"] for t in server.token_requests if t.get("code_verifier")]
    assert len(secrets_seen) >= 5
    for secret in secrets_seen:
        assert secret not in log


def test_logout_forgets_the_server(auth_env, remote, clients):
    server = remote()
    url = server.base + "/mcp"
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert client.close() == 0
    out = clients("--oauth-logout", url)
    assert out.proc.wait(15) == 0
    assert "forgot 1 cached sign-in" in out.stderr()
    assert not any((Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth").iterdir())
    again = proxy(clients, server)
    assert tools_of(again) == ["echo", "admin"]
    assert again.close() == 0
    assert sign_ins(auth_env) == 2


def test_no_oauth_and_static_authorization_turn_sign_in_off(auth_env, remote, clients):
    server = remote()
    for flags in (["--no-oauth"], ["-H", "Authorization", "Bearer static-token"]):
        client = proxy(clients, server, *flags)
        assert client.proc.wait(15) == 1
        assert "authentication failed" in client.stderr() and "(401)" in client.stderr()
    assert sign_ins(auth_env) == 0
    assert not os.path.exists(Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth")
