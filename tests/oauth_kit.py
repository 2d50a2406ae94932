"""Shared pieces of the OAuth tests (a pytest plugin: ``pytest_plugins = ["oauth_kit"]``).

The remote is ``servers/oauth_server.py`` (authorization server and MCP server in one, on
127.0.0.1), the company identity provider ``servers/oauth_idp.py``; the browser is
``fake_browser.py`` through ``$BROWSER``; the cache lives in a temporary
``MCP_PROXY_CONFIG_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import INIT_PARAMS, TESTS, ClientProcess, rpc

sys.path.insert(0, str(TESTS / "servers"))
import oauth_idp  # noqa: E402
import oauth_server  # noqa: E402

BROWSER = f"{sys.executable} {TESTS / 'fake_browser.py'} %s"


@pytest.fixture
def auth_env(tmp_path, monkeypatch):
    """The cache dir, the fake browser and its log, in os.environ (for SDK drivers) too."""
    env = {"MCP_PROXY_CONFIG_DIR": str(tmp_path / "config"), "BROWSER": BROWSER,
           "FAKE_BROWSER_LOG": str(tmp_path / "browser.log"), "FAKE_BROWSER_MODE": "follow",
           "FAKE_BROWSER_TABS": str(tmp_path / "tabs.log")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _serve(start):
    """A fixture's body: ``start(**switches)`` servers, all shut down at the end."""
    started = []

    def run(**switches):
        server = start(**switches)
        started.append(server)
        return server

    yield run
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def remote():
    """``remote(**switches)``: an ``oauth_server.OAuthServer``."""
    yield from _serve(oauth_server.start)


@pytest.fixture
def idp():
    """``idp(**switches)``: an ``oauth_idp.IdentityProvider`` (enterprise sign-in)."""
    yield from _serve(oauth_idp.start)


def visits(env: dict) -> list[str]:
    path = Path(env["FAKE_BROWSER_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def tabs(env: dict) -> list[int]:
    """The process id of the proxy behind each browser tab opened, in order."""
    path = Path(env["FAKE_BROWSER_TABS"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(line.split()[0]) for line in lines]


def sign_ins(env: dict) -> int:
    return sum("/authorize?" in url for url in visits(env))


def proxy(clients, server, *flags: str, url: str | None = None) -> ClientProcess:
    return clients("--transport", "streamablehttp", *flags, url or server.base + "/mcp")


def tools_of(client: ClientProcess) -> list[str]:
    # the sign-in happens while initialize waits: a sign-in with a code that is polled at
    # the server's pace takes 13 s in one test, too near handshake()'s 15 s on a busy machine
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=60)
    assert "result" in answer, answer
    client.send(rpc("notifications/initialized", None))
    answer = client.call(rpc("tools/list", 1), timeout=30)
    assert "result" in answer, answer
    return [tool["name"] for tool in answer["result"]["tools"]]


def init_error(client: ClientProcess) -> str:
    answer = client.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)
    assert "error" in answer, answer
    return answer["error"]["message"]
