"""Signing in to the proxy as a resource server through a real authorization server
(npm oidc-provider, tests/oidc_kit.py): the proxy's own client mode in front of it, with the
tests' fake browser, and the official SDK client with its OAuth client provider, find
everything they look for and sign in once."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from conftest import RAW_SERVER, rpc, run_driver

pytest_plugins = ["oidc_kit", "oauth_kit"]


def test_the_proxys_own_client_mode_signs_in_with_the_browser(oidc, proxy_factory, clients,
                                                              auth_env):
    provider = oidc()
    server = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                           "--named-server", "two", shlex.join(RAW_SERVER), "--", *RAW_SERVER)
    client = clients("--transport", "streamablehttp", server.base + "/servers/two/mcp")
    assert client.handshake()["result"]["serverInfo"]["name"] == "raw_server"
    listed = client.call(rpc("tools/list", 1), timeout=30)
    assert "echo" in [tool["name"] for tool in listed["result"]["tools"]]
    visits = Path(auth_env["FAKE_BROWSER_LOG"]).read_text().splitlines()
    authorizes = [url for url in visits if url.startswith(provider.issuer + "/auth?")]
    assert len(authorizes) == 1, visits  # one sign-in, through oidc-provider's pages
    authorize = authorizes[0]
    assert "resource=" + server.base.replace(":", "%3A").replace("/", "%2F") in authorize
    assert client.close() == 0
    server.expect(r"OAuth: refused POST /servers/two/mcp from 127\.0\.0\.1: no token was sent")


def test_the_sdk_client_signs_in_with_its_oauth_provider(oidc, proxy_factory):
    provider = oidc()
    server = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                           "--", *RAW_SERVER)
    report = run_driver("streamable", server.base + "/mcp", "tools", "echo",
                        extra=("--oauth",))
    assert "echo" in report["tools"], report
    assert report["echo"] == "hello", report
    authorize = report["sign_in_visits"][0]
    assert authorize.startswith(provider.issuer + "/auth?")
    query = dict(parse_qsl(urlsplit(authorize).query))
    assert query["resource"] == server.base + "/mcp"
    assert query["code_challenge_method"] == "S256"
    assert "mcp:tools" in query["scope"].split()
