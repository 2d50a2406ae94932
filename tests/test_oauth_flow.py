"""Sign-in variants: discovery paths, registration choices, scopes and step-up, refresh and
revocation, concurrent instances, and the browser step going wrong."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
import fake_browser
from oauth_kit import init_error, proxy, sign_ins, tools_of

from conftest import INIT_PARAMS, rpc

pytest_plugins = ["oauth_kit"]


@pytest.mark.parametrize("switches", [
    {"prm": "header"}, {"prm": "path"}, {"prm": "root"}, {"as_metadata": "oidc"},
    {"issuer_path": "/tenant1"}, {"issuer_path": "/tenant1", "as_metadata": "oidc"},
    {"prm": "none"}, {"prm": "none", "as_metadata": "none"}, {"iss": True},
], ids=lambda sw: ",".join(f"{k}={v}" for k, v in sw.items()))
def test_discovery_variants(auth_env, remote, clients, switches):
    server = remote(**switches)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert client.close() == 0
    assert sign_ins(auth_env) == 1
    assert server.authorize_params[0]["resource"] == server.base + "/mcp"


def test_resource_mismatch_is_refused(auth_env, remote, clients):
    server = remote(prm_resource="http://127.0.0.1:1/elsewhere")
    client = proxy(clients, server)
    message = init_error(client)
    assert "refusing to sign in" in message and "elsewhere" in message
    assert sign_ins(auth_env) == 0


def test_server_without_s256_is_refused(auth_env, remote, clients):
    server = remote(pkce_methods=["plain"])
    message = init_error(proxy(clients, server))
    assert "does not offer PKCE with S256" in message
    assert sign_ins(auth_env) == 0


def test_scope_from_the_challenge_wins(auth_env, remote, clients):
    server = remote(challenge_scope="admin")
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    assert server.authorize_params[0]["scope"] == "admin offline_access"
    assert server.registrations[0]["scope"] == "admin offline_access"


def test_step_up_on_insufficient_scope(auth_env, remote, clients):
    server = remote()
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    answer = client.call(rpc("tools/call", 2, name="admin", arguments={}), timeout=30)
    assert answer["result"]["content"][0]["text"] == "admin:{}"
    assert sign_ins(auth_env) == 2
    assert server.authorize_params[1]["scope"].split() == ["mcp", "offline_access", "admin"]
    assert client.close() == 0


@pytest.mark.parametrize("in_challenge", [True, False])
def test_step_up_gives_up_after_two_tries(auth_env, remote, clients, in_challenge):
    server = remote(admin_scope="root", stepup_scope_in_challenge=in_challenge)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    for attempt in range(3):
        answer = client.call(rpc("tools/call", 10 + attempt, name="admin"), timeout=30)
        assert "403" in answer["error"]["message"], answer
    assert sign_ins(auth_env) == 3  # the first sign-in and two step-ups, then no more
    assert client.call(rpc("tools/call", 20, name="echo"))["result"]
    assert client.close() == 0


def test_silent_refresh_with_rotation_across_runs(auth_env, remote, clients):
    server = remote(expires_in=61)  # inside the 60 s leeway after one second
    first = proxy(clients, server)
    assert tools_of(first) == ["echo", "admin"]
    threading.Event().wait(1.2)
    assert first.call(rpc("tools/list", 2))["result"]
    assert first.close() == 0
    assert server.refreshes == 1
    second = proxy(clients, server)  # uses the rotated refresh token from the cache
    threading.Event().wait(1.2)
    assert tools_of(second) == ["echo", "admin"]
    assert second.close() == 0
    assert server.refreshes == 2 and sign_ins(auth_env) == 1


def test_revoked_tokens_mean_one_new_sign_in(auth_env, remote, clients):
    server = remote(expires_in=61)
    first = proxy(clients, server)
    assert tools_of(first) == ["echo", "admin"]
    assert first.close() == 0  # else it may be the one that refreshes (and logs it)
    server.revoke_all()  # the refresh is then invalid_grant: tokens dropped, sign in again
    threading.Event().wait(1.2)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert sign_ins(auth_env) == 2 and len(server.registrations) == 1
    assert "invalid_grant" in client.stderr()


def test_revoked_client_registers_again(auth_env, remote, clients):
    server = remote(expires_in=61)
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    for record in server.registered.values():
        record["revoked"] = True
    threading.Event().wait(1.2)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    assert len(server.registrations) == 2 and sign_ins(auth_env) == 2
    assert "invalid_client" in client.stderr()


def test_wrong_state_is_ignored_until_the_timeout(auth_env, remote, clients, monkeypatch):
    monkeypatch.setenv("FAKE_BROWSER_MODE", "wrong-state")
    server = remote()
    client = proxy(clients, server, "--oauth-timeout", "3",
                   url=server.base + "/mcp")
    message = init_error(client)
    assert "sign-in not completed within 3 s" in message
    assert "wrong state ignored" in client.stderr()
    assert not server.tokens


def test_callback_timeout_is_a_json_rpc_error(auth_env, remote, clients, monkeypatch):
    monkeypatch.setenv("FAKE_BROWSER_MODE", "ignore")
    server = remote()
    client = proxy(clients, server, "--oauth-timeout", "2")
    assert "sign-in not completed within 2 s" in init_error(client)
    assert "/authorize?" in client.stderr()  # the URL is always printed
    assert sign_ins(auth_env) == 1  # the browser was started, the user walked away


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_browser_prints_the_url_and_takes_a_pasted_visit(auth_env, remote, clients,
                                                            monkeypatch):
    server = remote(registration=False, auth_methods=["client_secret_basic"],
                    clients={"pre-1": {"secret": "pre-secret-1", "method":
                                       "client_secret_basic"}})
    port = free_port()
    client = proxy(clients, server, "--oauth-no-browser", "--oauth-client-id", "pre-1",
                   "--oauth-client-secret", "pre-secret-1", "--oauth-callback-port", str(port))
    client.send(rpc("initialize", 0, **INIT_PARAMS))
    url = None
    for _ in range(100):
        found = [word for line in client.err if line for word in line.split()
                 if "/authorize?" in word]
        if found:
            url = found[0]
            break
        threading.Event().wait(0.1)
    assert url, client.stderr()
    monkeypatch.delenv("FAKE_BROWSER_LOG")  # only the proxy's own browser visits are counted
    assert fake_browser.main(url) == 0  # the user opens it elsewhere (port forwarded)
    assert client.recv(timeout=30)["result"]["serverInfo"]["name"] == "oauth-scripted"
    assert sign_ins(auth_env) == 0 and not server.registrations
    assert server.authorize_params[0]["redirect_uri"] == f"http://127.0.0.1:{port}/callback"
    assert "pre-secret-1" not in client.stderr()


def test_without_registration_the_error_names_the_flag(auth_env, remote, clients):
    server = remote(registration=False)
    assert "--oauth-client-id" in init_error(proxy(clients, server))


def test_client_id_metadata_document(auth_env, remote, clients):
    server = remote(cimd=True)
    doc = "https://client.example/mcp-proxy.json"
    client = proxy(clients, server, "--oauth-client-metadata-url", doc)
    assert tools_of(client) == ["echo", "admin"]
    assert server.authorize_params[0]["client_id"] == doc and not server.registrations


def test_cimd_not_advertised_falls_back_to_registration(auth_env, remote, clients):
    server = remote()
    client = proxy(clients, server, "--oauth-client-metadata-url",
                   "https://client.example/mcp-proxy.json")
    assert tools_of(client) == ["echo", "admin"]
    assert len(server.registrations) == 1


def test_registered_client_cache_names_the_issuer(auth_env, remote, clients):
    server = remote()
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    folder = next((Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth").iterdir())
    record = json.loads(next(folder.glob("client-*.json")).read_text())
    assert record["issuer"] == server.issuer and record["client_id"] == "dcr-1"
    assert json.loads((folder / "server.json").read_text()) == {"url": server.base + "/mcp"}


@pytest.mark.parametrize("transport", [["--transport", "sse"], []])  # [], the default: auto
def test_sse_remote_signs_in_on_the_stream_and_steps_up_on_a_message(auth_env, remote,
                                                                     clients, transport):
    server = remote()
    server.sw["prm_resource"] = server.base + "/"  # one resource for /sse and /messages/
    # the /sse GET (or, with auto, the initialize POST) is refused first: sign-in at start
    client = clients(*transport, server.base + "/sse")
    assert tools_of(client) == ["echo", "admin"]
    assert sign_ins(auth_env) == 1
    answer = client.call(rpc("tools/call", 2, name="admin", arguments={}), timeout=30)
    assert answer["result"]["content"][0]["text"] == "admin:{}"  # a 403 on /messages/
    assert sign_ins(auth_env) == 2
    assert client.close() == 0


def test_two_instances_refresh_once(auth_env, remote, clients):
    server = remote(expires_in=61)  # due for refresh one second after the sign-in
    first = proxy(clients, server)
    assert tools_of(first) == ["echo", "admin"]
    assert first.close() == 0
    threading.Event().wait(1.2)
    pair = [proxy(clients, server), proxy(clients, server)]
    for client in pair:
        client.send(rpc("initialize", 0, **INIT_PARAMS))
    for client in pair:
        assert client.recv(timeout=40)["result"]["serverInfo"]["name"] == "oauth-scripted"
    assert server.refreshes == 1  # a rotated refresh token used twice would be invalid_grant
    assert sign_ins(auth_env) == 1


def test_refused_sign_in_is_reported(auth_env, remote, clients):
    server = remote(deny=True)
    message = init_error(proxy(clients, server))
    assert "access_denied" in message and "the user said no" in message
    assert not server.tokens


def test_cimd_unsupported_refresh_uses_the_registration(auth_env, remote, clients):
    server = remote(expires_in=61)
    flags = ("--oauth-client-metadata-url", "https://client.example/mcp-proxy.json")
    assert tools_of(proxy(clients, server, *flags)) == ["echo", "admin"]
    threading.Event().wait(1.2)
    client = proxy(clients, server, *flags)
    assert tools_of(client) == ["echo", "admin"]
    assert server.refreshes == 1 and sign_ins(auth_env) == 1


def test_authorization_response_from_another_issuer_is_refused(auth_env, remote, clients):
    server = remote(iss="http://127.0.0.1:1/other-issuer")
    assert "iss mismatch" in init_error(proxy(clients, server))
    assert not server.tokens and sign_ins(auth_env) == 1


def test_offline_access_only_when_offered(auth_env, remote, clients):
    server = remote(grantable=["mcp"])
    assert tools_of(proxy(clients, server)) == ["echo", "admin"]
    assert server.authorize_params[0]["scope"] == "mcp"


def test_token_endpoint_down_keeps_the_still_valid_token(auth_env, remote, clients):
    server = remote(expires_in=65)
    client = proxy(clients, server)
    assert tools_of(client) == ["echo", "admin"]
    server.sw["token_down"] = True
    threading.Event().wait(5.2)  # due for refresh, but still valid for a minute
    assert client.call(rpc("tools/list", 2))["result"]
    assert "token refresh failed" in client.stderr() and server.refreshes == 0


def test_sse_sign_in_timeout_at_start_answers_the_first_request(auth_env, remote, clients,
                                                               monkeypatch):
    monkeypatch.setenv("FAKE_BROWSER_MODE", "ignore")
    server = remote()
    server.sw["prm_resource"] = server.base + "/"
    client = clients("--transport", "sse", "--oauth-timeout", "2",
                     server.base + "/sse")
    client.send(rpc("initialize", 0, **INIT_PARAMS))  # waits in the pipe during the sign-in
    answer = client.recv(timeout=30)
    assert "sign-in not completed within 2 s" in answer["error"]["message"], answer
    assert client.proc.wait(15) == 1


def test_a_new_callback_port_means_a_new_registration(auth_env, remote, clients):
    server = remote()
    ports = [free_port()]
    while len(ports) < 2:
        ports += [port for port in [free_port()] if port != ports[0]]
    for port in ports:
        client = proxy(clients, server, "--oauth-callback-port", str(port))
        assert tools_of(client) == ["echo", "admin"]
        assert client.close() == 0
        for tokens in (Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth").glob("*/tokens.json"):
            tokens.unlink()  # sign in again next time
    assert [r["redirect_uris"] for r in server.registrations] == [
        [f"http://127.0.0.1:{port}/callback"] for port in ports]
