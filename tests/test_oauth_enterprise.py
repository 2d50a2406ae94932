"""Enterprise-managed sign-in (SEP-990), with the real CLI against a scripted identity
provider (``servers/oauth_idp.py``) and the scripted authorization server: the token exchange
for an ID-JAG, the ``jwt-bearer`` grant, the cache, a fresh ID token from the command when
the access token expires, refusals at either server, and hostile identity provider answers."""

from __future__ import annotations

import json
import shlex
import stat
import sys
import threading
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
from oauth_kit import init_error, oauth_idp, proxy, sign_ins, tools_of

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import ProxyError
from mcp_proxy.upstream.oauth.discovery import Discovery
from mcp_proxy.upstream.oauth.enterprise import EnterpriseSignIn
from mcp_proxy.upstream.oauth.id_token import is_jwt
from mcp_proxy.upstream.oauth.wire import Client

pytest_plugins = ["oauth_kit"]

SVC_SECRET = "svc-secret-3"


@pytest.fixture
def company(auth_env, remote, idp, monkeypatch):
    """Start an identity provider and an MCP server whose authorization server trusts it."""
    monkeypatch.setenv("MCP_PROXY_IDP_CLIENT_SECRET", oauth_idp.SECRET)

    def start(idp_switches: dict | None = None, **switches):
        provider = idp(**(idp_switches or {}))
        server = remote(**{"registration": False, "auth_methods": ["client_secret_basic"],
                           "clients": {"svc": {"secret": SVC_SECRET,
                                               "method": "client_secret_basic"}},
                           "idp_key": provider.public_pem.decode(), **switches})
        if "pairs" not in (idp_switches or {}):
            provider.sw["pairs"] = {server.issuer: server.base + "/mcp"}
        return provider, server

    return start


def flags(provider, *token: str) -> tuple[str, ...]:
    return ("--client-id", "svc", "--client-secret", SVC_SECRET, "--idp-token-url",
            provider.token_url, "--idp-client-id", oauth_idp.CLIENT, *token)


def token_file(tmp_path: Path, provider, **claims) -> str:
    path = tmp_path / "id_token"
    path.write_text(provider.id_token(**claims) + "\n")
    return str(path)


def test_the_two_steps_with_every_parameter(company, clients, tmp_path, auth_env):
    provider, server = company(issuer_path="/tenant1")
    id_token = token_file(tmp_path, provider)
    client = proxy(clients, server, "--debug", *flags(provider, "--id-token", id_token))
    assert tools_of(client) == ["echo", "admin"]
    [exchange] = provider.exchanges
    assert exchange == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
        "subject_token": Path(id_token).read_text().strip(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "audience": server.issuer, "resource": server.base + "/mcp", "scope": "mcp",
        "client_id": oauth_idp.CLIENT, "client_secret": oauth_idp.SECRET,
        "authorization": None}
    [grant] = server.token_requests
    assert grant == {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                     "assertion": provider.issued[0], "resource": server.base + "/mcp",
                     "scope": "mcp"}  # the client authenticated with HTTP Basic
    assert server.assertions == provider.issued  # the ID-JAG went there and nowhere else
    assert sign_ins(auth_env) == 0 and not server.registrations
    log = client.stderr()
    for secret in (oauth_idp.SECRET, SVC_SECRET, exchange["subject_token"], provider.issued[0],
                   *server.tokens):
        assert secret not in log
    assert "signed in to" in log and "through the identity provider" in log
    assert client.close() == 0
    [cached] = (Path(auth_env["MCP_PROXY_CONFIG_DIR"]) / "oauth").glob("*/tokens.json")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert provider.issued[0] not in cached.read_text()  # the ID-JAG is not kept either
    again = proxy(clients, server, *flags(provider, "--id-token", id_token))
    assert tools_of(again) == ["echo", "admin"]
    assert len(provider.exchanges) == 1 and len(server.token_requests) == 1  # the cache
    assert again.close() == 0
    logout = clients("--oauth-logout", server.base + "/mcp")
    assert logout.proc.wait(15) == 0 and not cached.exists()


def test_private_key_jwt_at_the_authorization_server(company, clients, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    provider, server = company(auth_methods=["private_key_jwt"], clients={},
                               client_keys={"svc": public.decode()}, issuer_path="/t1")
    client = proxy(clients, server, "--client-id", "svc", "--client-key",
                   str(tmp_path / "key.pem"), "--idp-token-url", provider.token_url,
                   "--idp-client-id", oauth_idp.CLIENT, "--id-token",
                   token_file(tmp_path, provider))
    assert tools_of(client) == ["echo", "admin"]
    [grant] = server.token_requests
    assert grant["grant_type"].endswith("jwt-bearer") and grant["assertion"] == \
        provider.issued[0]
    assert grant["client_assertion"] != grant["assertion"]  # the client's own, aud checked
    assert "client_secret" not in grant


def test_two_instances_exchange_once(company, clients, tmp_path):
    provider, server = company()
    command, _, runs = sso_tool(tmp_path, provider, 2)
    both = [proxy(clients, server, *flags(provider, "--id-token-command", command))
            for _ in range(2)]
    for client in both:
        assert tools_of(client) == ["echo", "admin"]
    assert runs.read_text() == "1" and len(provider.exchanges) == 1  # the lock, the cache


def test_a_fresh_token_refused_is_an_error_not_a_loop(company, clients, tmp_path):
    provider, server = company(accept=False)  # the MCP server refuses every token
    client = proxy(clients, server, *flags(provider, "--id-token",
                                           token_file(tmp_path, provider)))
    assert init_error(client) == ("authentication failed: enterprise sign-in: the remote "
                                  "refused the token the sign-in just gave")
    assert client.proc.wait(15) == 1  # at start-up: for good
    assert len(provider.exchanges) == 1 and "Traceback" not in client.stderr()


def test_a_token_revoked_later_means_a_new_sign_in(company, clients, tmp_path):
    provider, server = company()
    command, _, runs = sso_tool(tmp_path, provider, 2)
    client = clients("--transport", "streamablehttp", *flags(provider, "--id-token-command",
                                                            command), server.base + "/mcp",
                     env={"MCP_PROXY_FRESH_TOKEN": "0.5"})
    assert tools_of(client) == ["echo", "admin"]
    threading.Event().wait(0.6)  # the token has been good a while
    server.revoke_all()
    answer = client.call({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, timeout=30)
    assert "result" in answer, answer
    assert runs.read_text() == "2" and len(provider.exchanges) == 2


def sso_tool(tmp_path: Path, provider, count: int) -> tuple[str, list[str], Path]:
    """A company tool that prints the next of ``count`` fresh ID tokens on each run."""
    tokens = [provider.id_token() for _ in range(count)]
    (tmp_path / "tokens").write_text("\n".join(tokens))
    script, runs = tmp_path / "sso.py", tmp_path / "runs"
    script.write_text(
        "import pathlib, sys\n"
        "runs = pathlib.Path(sys.argv[1])\n"
        "n = int(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text(str(n + 1))\n"
        "print('company-sso: issuing token', n, file=sys.stderr)\n"
        "print(pathlib.Path(sys.argv[2]).read_text().splitlines()[n])\n")
    command = shlex.join([sys.executable, str(script), str(runs), str(tmp_path / "tokens")])
    return command, tokens, runs


def test_an_expired_token_means_a_fresh_id_token_and_both_steps_again(company, clients,
                                                                      tmp_path):
    provider, server = company(expires_in=2)  # and no refresh token
    command, tokens, runs = sso_tool(tmp_path, provider, 3)
    client = proxy(clients, server, *flags(provider, "--id-token-command", command))
    assert tools_of(client) == ["echo", "admin"]
    assert runs.read_text() == "1"
    threading.Event().wait(1.5)  # the access token is due
    answer = client.call({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, timeout=30)
    assert "result" in answer, answer
    assert runs.read_text() == "2"
    assert [e["subject_token"] for e in provider.exchanges] == tokens[:2]
    assert len(server.assertions) == 2 and len(set(server.assertions)) == 2
    assert "company-sso: issuing token 1" in client.stderr()  # its stderr is ours
    assert tokens[1] not in client.stderr()


def test_a_refresh_token_is_used_before_the_identity_provider(company, clients, tmp_path):
    provider, server = company(expires_in=2, jag_refresh=True)
    command, _, runs = sso_tool(tmp_path, provider, 2)
    client = proxy(clients, server, *flags(provider, "--id-token-command", command))
    assert tools_of(client) == ["echo", "admin"]
    threading.Event().wait(1.5)
    assert "result" in client.call({"jsonrpc": "2.0", "id": 7, "method": "ping"}, timeout=30)
    assert server.refreshes == 1 and runs.read_text() == "1" and len(provider.exchanges) == 1


def test_basic_at_the_identity_provider_when_it_refuses_the_body(company, clients, tmp_path):
    provider, server = company({"client_method": "client_secret_basic"})
    command, _, runs = sso_tool(tmp_path, provider, 1)
    client = proxy(clients, server, "--idp-client-secret", oauth_idp.SECRET,
                   *flags(provider, "--id-token-command", command))
    assert tools_of(client) == ["echo", "admin"]
    assert [e["authorization"] is not None for e in provider.exchanges] == [False, True]
    assert "client_secret" not in provider.exchanges[1]
    assert runs.read_text() == "1"  # one ID token for both tries


@pytest.mark.parametrize(("idp_switches", "claims", "expected"), [
    ({}, {"lifetime": -60}, "enterprise sign-in: the token exchange at the identity provider: "
                            "invalid_grant (the subject token has expired)"),
    ({"pairs": {"https://as.example": "https://mcp.example/mcp"}}, {},
     "enterprise sign-in: the token exchange at the identity provider: invalid_grant "
     "(Audience validation failed)"),
    ({"client_at_as": "someone-else"}, {}, "enterprise sign-in: the ID-JAG grant at the "
                                           "authorization server: invalid_grant (client_id "
                                           "mismatch)"),
    ({"jag_audience": "https://as.example/"}, {},
     "enterprise sign-in: the ID-JAG grant at the authorization server: invalid_grant (aud "
     "https://as.example/ is not this server)"),
], ids=["expired-id-token", "idp-refuses-the-audience", "as-refuses-the-client",
        "wrong-audience"])
def test_refusals_are_one_line_with_the_servers_words(company, clients, tmp_path,
                                                      idp_switches, claims, expected):
    provider, server = company(idp_switches)
    client = proxy(clients, server, *flags(provider, "--id-token",
                                           token_file(tmp_path, provider, **claims)))
    assert init_error(client) == "authentication failed: " + expected  # start-up's words
    log = client.stderr()
    assert "Traceback" not in log and "/authorize" not in log and not server.tokens
    if "identity provider" in expected:
        assert not server.token_requests  # the AS heard nothing
    assert all(jag not in log for jag in provider.issued)


@pytest.mark.parametrize(("command", "expected"), [
    ("false", "--id-token-command 'false' failed (exit status 1; its messages are in the "
              "log above)"),
    ("true", "--id-token-command gave no ID token (empty)"),
    ("echo not-a-token", "--id-token-command gave no ID token: what it gave is not a JWT"),
    ("sleep 30", "--id-token-command 'sleep' did not finish within 1 s (--oauth-timeout)"),
    ("/nonexistent/sso", "--id-token-command: cannot run '/nonexistent/sso'"),
], ids=["fails", "empty", "not-a-jwt", "hangs", "missing"])
def test_a_failing_id_token_command_is_one_line(company, clients, command, expected):
    provider, server = company()
    client = proxy(clients, server, "--oauth-timeout", "1",
                   *flags(provider, "--id-token-command", command))
    message = init_error(client)
    assert message.startswith("authentication failed: " + expected)
    assert "\n" not in message
    assert "Traceback" not in client.stderr() and not provider.exchanges


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(("status", "answer", "expected"), [
    (200, b"not json", "the token exchange at the identity provider: the token endpoint "
                       "answered no JSON object"),
    (200, DEEP, "answered no JSON object"),
    (200, {"access_token": "a.b.c", "token_type": "N_A"},
     "the identity provider's answer is not an ID-JAG (no issued_token_type)"),
    (200, {"issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
           "access_token": "a.b.c"}, "not an ID-JAG (issued_token_type "
                                     "'urn:ietf:params:oauth:token-type:access_token')"),
    (200, {"issued_token_type": oauth_idp.ID_JAG, "access_token": "not a jwt\x1b[2J"},
     "its access_token is not a JWT"),
    (200, {"issued_token_type": oauth_idp.ID_JAG, "access_token": "a.b.c", "scope": 5},
     "malformed scope"),
    (400, {"error": "invalid_grant\x1b[31m", "error_description": "one\ntwo" + "x" * 5000},
     "invalid_grant [31m (one two" + "x" * 193 + ")"),
    (400, DEEP, "at the identity provider: HTTP 400"),
    (503, {"error": "temporarily_unavailable"}, "token endpoint answered HTTP 503"),
], ids=["text", "deep", "no-type", "access-token-type", "not-a-jwt", "bad-scope",
        "escapes", "deep-error", "down"])
def test_hostile_identity_provider_answers_are_one_line(company, clients, tmp_path, status,
                                                        answer, expected):
    provider, server = company({"answer": answer, "status": status})
    client = proxy(clients, server, "--start-timeout", "2",
                   *flags(provider, "--id-token", token_file(tmp_path, provider)))
    message = init_error(client)
    assert expected in message and "\n" not in message and "\x1b" not in message
    assert "Traceback" not in client.stderr() and not server.token_requests


@pytest.mark.parametrize(("extra", "expected"), [
    (("--id-token", "t"), "--id-token is for enterprise sign-in: give --idp-token-url too"),
    (("--idp-token-url", "http://idp.example/token", "--id-token", "t"),
     "--idp-token-url must be https (http only on this machine)"),
    (("--idp-token-url", "https://idp.example/token"), "give --id-token FILE or "
                                                       "--id-token-command CMD"),
    (("--idp-token-url", "https://idp.example/token", "--id-token", "t",
      "--id-token-command", "x"), "give --id-token FILE or --id-token-command CMD"),
    (("--idp-token-url", "https://idp.example/token", "--id-token", "/nonexistent/t",
      "--idp-client-id", "c", "--client-id", "svc"), "--id-token: no file at"),
    (("--idp-token-url", "https://idp.example/token", "--id-token-command", "a 'b",
      "--idp-client-id", "c", "--client-id", "svc"), "--id-token-command: No closing"),
    (("--idp-token-url", "https://idp.example/token", "--id-token-command", "x"),
     "needs --idp-client-id"),
    (("--idp-token-url", "https://idp.example/token", "--id-token-command", "x",
      "--idp-client-id", "c"), "needs --client-id with --client-secret or --client-key"),
    (("--idp-token-url", "https://idp.example/token", "--id-token-command", "x",
      "--idp-client-id", "c", "--client-id", "svc", "--token-url", "https://a/t"),
     "--token-url does not go with --idp-token-url"),
])
def test_impossible_flags_are_refused_at_once(clients, extra, expected):
    client = clients(*extra, "http://127.0.0.1:9/mcp")
    assert client.proc.wait(15) == 1
    assert expected in client.stderr() and "Traceback" not in client.stderr()


# --- the exchange's answer, any JSON at all ---------------------------------------------------

@pytest.fixture(scope="module")
def lone_idp(tmp_path_factory):
    provider = oauth_idp.start(answer=b"{}")
    path = tmp_path_factory.mktemp("idp") / "id_token"
    path.write_text(provider.id_token())
    found = Discovery("https://mcp.example/mcp", "https://as.example",
                      {"issuer": "https://as.example", "token_endpoint": "https://as.example/t"})
    settings_ = ClientSettings(url="https://mcp.example/mcp", idp_token_url=provider.token_url,
                               id_token_file=str(path), idp_client_id=oauth_idp.CLIENT,
                               idp_client_secret=oauth_idp.SECRET)
    signer = EnterpriseSignIn(settings_, requests.Session(), Client("svc"))
    yield provider, signer, found
    provider.shutdown()
    provider.server_close()


values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) \
    | st.sampled_from([oauth_idp.ID_JAG, "N_A", "a.b.c", "x.y", "a.b.c.d.e", "é.b.c"]) \
    | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers())
bodies = st.dictionaries(st.sampled_from(["issued_token_type", "access_token", "token_type",
                                          "scope", "expires_in", "error",
                                          "error_description"]), values) \
    | st.lists(st.integers(), max_size=3) | st.text(max_size=40) | st.integers()


@settings(max_examples=200, deadline=None, database=None)
@given(body=bodies, status=st.sampled_from([200, 200, 400, 401, 403, 500]))
def test_any_exchange_answer_is_an_id_jag_or_one_clear_line(lone_idp, body, status):
    provider, signer, found = lone_idp
    provider.sw.update(answer=json.dumps(body).encode(), status=status)
    signer._basic_fallback = False  # one request per example
    try:
        assertion, scope = signer.exchange(found, "mcp")
    except ProxyError as exc:
        text = str(exc)
        assert text.isprintable() and len(text) < 400 and oauth_idp.SECRET not in text
        return
    assert status == 200 and body["issued_token_type"] == oauth_idp.ID_JAG
    assert is_jwt(assertion) and assertion == body["access_token"]
    assert scope is None or isinstance(scope, str)
