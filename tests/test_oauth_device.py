"""Signing in with a code (RFC 8628 device authorization), with the real CLI against the
scripted authorization server: when it is chosen, the code on stderr, the polling pace,
denial, expiry, the timeout, the cache and refresh, and a hostile device endpoint."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
from oauth_kit import init_error, proxy, sign_ins, tools_of, visits

from conftest import rpc
from mcp_proxy.errors import AuthError
from mcp_proxy.upstream.oauth.device import DeviceCode

pytest_plugins = ["oauth_kit"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def headless(auth_env, monkeypatch):
    """No $BROWSER and no display: no browser can open."""
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    return auth_env


def code_line(client) -> str:
    return next(line for line in client.err if line and "enter the code" in line)


def test_headless_machine_signs_in_with_a_code(headless, remote, clients):
    server = remote(device=True, device_pending=2)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    line = code_line(client)
    assert f"open {server.base}/verify and enter the code " in line
    assert "browser" not in line
    assert f"(it expires in 10 min), or open {server.base}/verify?user_code=" in line
    assert len(server.device_polls) == 3  # two authorization_pending, then the tokens
    assert server.hits["GET /authorize"] == 0 and not sign_ins(headless)
    registration = server.registrations[0]
    assert registration["grant_types"] == [DEVICE_GRANT, "refresh_token"]
    assert "redirect_uris" not in registration and registration["response_types"] == []
    request = server.device_requests[0]
    assert request["resource"] == server.base + "/mcp"
    assert request["scope"] == "mcp offline_access"
    assert "dc-" not in client.stderr()  # the device code is never shown
    assert client.close() == 0
    folder = next((Path(headless["MCP_PROXY_CONFIG_DIR"]) / "oauth").iterdir())
    assert json.loads((folder / "tokens.json").read_text())["refresh_token"].startswith("rt-")


def test_no_browser_flag_chooses_the_code_and_a_browser_opens_nothing(auth_env, remote,
                                                                      clients):
    server = remote(device=True, device_pending=0)
    client = proxy(clients, server, "--oauth-no-browser")
    assert tools_of(client) == ["echo", "admin"]
    assert "enter the code" in code_line(client)
    assert visits(auth_env) == []


def test_oauth_device_opens_the_complete_uri_in_a_browser(auth_env, remote, clients):
    server = remote(device=True, device_pending=10**6)  # only the browser's visit approves
    client = proxy(clients, server, "--oauth-device")
    assert tools_of(client) == ["echo", "admin"]
    assert "in the browser that opened, or open" in code_line(client)
    assert [url.split("=")[0] for url in visits(auth_env)] == [
        server.base + "/verify?user_code"]


def test_a_browser_means_the_usual_sign_in_unless_asked(auth_env, remote, clients):
    server = remote(device=True)
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    assert sign_ins(auth_env) == 1 and not server.device_requests


def test_no_oauth_device_keeps_the_url_to_open(headless, remote, clients):
    server = remote(device=True)
    client = proxy(clients, server, "--no-oauth-device", "--oauth-timeout", "1")
    assert "sign-in not completed within 1 s" in init_error(client)
    assert "/authorize?" in client.stderr() and not server.device_requests


def test_oauth_device_without_server_support_is_one_clear_error(auth_env, remote, clients):
    server = remote()
    client = proxy(clients, server, "--oauth-device")
    message = init_error(client)
    assert "does not offer sign-in with a code" in message
    assert "leave out --oauth-device" in message
    assert "Traceback" not in client.stderr() and not server.registrations


def test_headless_without_server_support_prints_the_url(headless, remote, clients):
    server = remote()
    client = proxy(clients, server, "--oauth-timeout", "1")
    assert "sign-in not completed within 1 s" in init_error(client)
    assert "/authorize?" in client.stderr()


def test_interval_and_slow_down_are_honoured(headless, remote, clients):
    server = remote(device=True, device_interval=1, device_slow_down=1, device_pending=1)
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    polls = server.device_polls
    assert len(polls) == 3
    assert polls[1] - polls[0] >= 5.9  # slow_down: 1 s + 5 s
    assert polls[2] - polls[1] >= 5.9  # and it stays slower


@pytest.mark.parametrize(("outcome", "expected"), [
    ("deny", "sign-in refused by {issuer}: access_denied (the user said no on the phone)"),
    ("expire", "the sign-in code expired before it was entered (expired_token): sign in "
               "again for a new one"),
])
def test_denial_and_expiry_are_one_line(headless, remote, clients, outcome, expected):
    server = remote(device=True, device_outcome=outcome, device_pending=1)
    client = proxy(clients, server)
    assert init_error(client) == expected.format(issuer=server.issuer)
    assert "Traceback" not in client.stderr() and not server.tokens
    answer = client.call(rpc("ping", 5), timeout=30)
    assert "error" in answer  # refused at once for a while: no new code, no polling
    assert len(server.device_requests) == 1


def test_the_wait_is_bounded_by_the_timeout_and_the_code_expiry(headless, remote, clients):
    server = remote(device=True, device_pending=10**6)
    client = proxy(clients, server, "--oauth-timeout", "1")
    assert init_error(client) == ("sign-in not completed within 1 s (the code is in the "
                                  "log; raise --oauth-timeout)")
    server = remote(device=True, device_pending=10**6, device_expires_in=1)
    client = proxy(clients, server)
    assert init_error(client) == ("the sign-in code expired after 1 s without an answer: "
                                  "sign in again for a new one")


def test_tokens_are_cached_and_refreshed_as_the_browser_ones(headless, remote, clients):
    server = remote(device=True, expires_in=61)  # due for refresh one second later
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    threading.Event().wait(1.2)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert server.refreshes == 1 and len(server.device_requests) == 1
    server.revoke_all()  # refresh refused: one new sign-in, with the registration kept
    threading.Event().wait(1.2)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert len(server.device_requests) == 2 and len(server.registrations) == 1


def test_a_browser_registration_is_not_used_for_the_code(auth_env, remote, clients,
                                                         monkeypatch):
    server = remote(device=True)
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]  # the browser
    for tokens in (Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth").glob("*/tokens.json"):
        tokens.unlink()
    assert tools_of(proxy(clients, server, "--oauth-device")) == ["echo", "admin"]
    assert [r["grant_types"][0] for r in server.registrations] == [
        "authorization_code", DEVICE_GRANT]


GOOD = {"device_code": "d", "user_code": "WDJB-MJHT", "verification_uri":
        "https://example.com/device", "expires_in": 600}


@pytest.mark.parametrize(("answer", "expected"), [
    (b"not json", "answered no JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "answered no JSON object"),
    ([1, 2], "answered no JSON object"),
    ({}, "the answer has no device_code"),
    ({**GOOD, "user_code": None}, "the answer has no user_code"),
    ({**GOOD, "verification_uri": None}, "the answer has no verification_uri"),
    ({**GOOD, "verification_uri": "http://verify.example/device"}, "is not https"),
    ({**GOOD, "verification_uri_complete": "http://verify.example/d?c=1"}, "is not https"),
    ({**GOOD, "verification_uri": "javascript:alert(1)"}, "is not a URL"),
    ({**GOOD, "verification_uri": "https://evil.example/ and enter the code X"}, "not a URL"),
    ({**GOOD, "user_code": "\x1b[2J\x1b[31mBAD"}, "user_code is malformed"),
    ({**GOOD, "interval": 10**8}, "wait 1e+08 s between polls, but its code expires"),
    ({**GOOD, "expires_in": None, "interval": 400}, "longer than --oauth-timeout (300 s)"),
    ({**GOOD, "interval": "5"}, "interval is not a number of seconds: '5'"),
    ({**GOOD, "expires_in": -1}, "expires_in is not a number of seconds"),
], ids=["text", "deep", "array", "empty", "no-user-code", "no-uri", "http-uri",
        "http-complete", "not-a-url", "spaces", "escapes", "huge-interval", "interval-over-timeout",
        "string-interval", "negative-expiry"])
def test_a_hostile_device_endpoint_is_one_clear_error(headless, remote, clients, answer,
                                                      expected):
    server = remote(device=True, device_answer=answer)
    client = proxy(clients, server)
    message = init_error(client)
    assert expected in message and "\n" not in message and "\x1b" not in message
    assert "Traceback" not in client.stderr() and not server.device_polls


def test_device_endpoint_refusal_names_the_error(headless, remote, clients):
    server = remote(device=True, registration=False,
                    clients={"web-only": {"secret": "s3cret-1", "method": "client_secret_post"}},
                    auth_methods=["client_secret_post"])
    server.registered["web-only"] = {"grant_types": ["authorization_code"],
                                     "token_endpoint_auth_method": "client_secret_post",
                                     "client_secret": "s3cret-1"}
    client = proxy(clients, server, "--oauth-client-id", "web-only", "--oauth-client-secret",
                   "s3cret-1")
    assert init_error(client) == "device authorization: unauthorized_client"
    assert "s3cret-1" not in client.stderr()


answers = st.dictionaries(
    st.sampled_from(["device_code", "user_code", "verification_uri", "verification_url",
                     "verification_uri_complete", "expires_in", "interval", "other"]),
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["https://a.example/x", "http://127.0.0.1:1/v", "http://a.example/",
                       "https://[::1", "ftp://a.example/"]) | st.lists(st.integers()))


@settings(max_examples=200, deadline=None, database=None)
@given(body=answers | st.lists(st.integers()) | st.text())
def test_any_device_answer_parses_or_is_an_auth_error(body):
    try:
        code = DeviceCode.parse(body, "https://as.example/device")
    except AuthError as exc:
        assert "\n" not in str(exc)
        return
    assert code.user_code.isprintable() and code.interval >= 0
    assert code.verification_uri.startswith(("https://", "http://127.0.0.1"))

