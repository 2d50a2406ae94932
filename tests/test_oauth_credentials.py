"""The client credentials grant, completed: the token endpoint discovered from the remote's
metadata, the client authenticated as the server supports (Basic, body, or a signed key)."""

from __future__ import annotations

import base64
import json

import pytest

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit")
from oauth_kit import sign_ins, tools_of

pytest_plugins = ["oauth_kit"]


def service(clients, server, *flags: str):
    return clients("--transport", "streamablehttp", "--client-id", "svc", *flags,
                   server.base + "/mcp")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_secret_with_the_method_the_server_supports(auth_env, remote, clients, method):
    server = remote(auth_methods=[method], registration=False,
                    clients={"svc": {"secret": "svc-secret-1", "method": method}})
    client = service(clients, server, "--client-secret", "svc-secret-1")
    assert tools_of(client) == ["echo", "admin"]
    assert client.close() == 0
    [request] = server.token_requests
    assert request["grant_type"] == "client_credentials"
    assert request["resource"] == server.base + "/mcp"
    assert ("client_secret" in request) == (method == "client_secret_post")
    assert sign_ins(auth_env) == 0
    assert "svc-secret-1" not in client.stderr()
    assert not any(token in client.stderr() for token in server.tokens)


def test_token_url_given_and_a_server_that_wants_basic(auth_env, remote, clients):
    server = remote(auth_methods=["client_secret_basic"],
                    clients={"svc": {"secret": "svc-secret-2", "method":
                                     "client_secret_basic"}})
    client = service(clients, server, "--client-secret", "svc-secret-2", "--token-url",
                     server.base + "/token")
    assert tools_of(client) == ["echo", "admin"]
    assert [("client_secret" in r) for r in server.token_requests] == [True, False]
    assert client.call({"jsonrpc": "2.0", "id": 5, "method": "ping"})["result"] == {}
    assert len(server.token_requests) == 2  # the method that worked is kept


@pytest.mark.parametrize("kind, issuer_path, given, metadata", [
    ("rsa", "", False, True), ("ec", "/tenant1", False, True), ("rsa", "/tenant1", True, True),
    ("rsa", "", False, False), ("ec", "", True, False)])
def test_private_key_jwt(auth_env, remote, clients, tmp_path, kind, issuer_path, given,
                         metadata):
    """The assertion's ``aud`` is the issuer identifier (the server refuses anything else),
    with the token endpoint discovered or given (``--token-url``: the issuer from the
    metadata that names it). A server with no metadata at all (its token endpoint is the
    spec's default, guessed) has no issuer identifier to name: the ``aud`` is the token
    endpoint (RFC 7523), never the guessed origin."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" \
        else ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "key.pem").write_bytes(pem)
    bare = {} if metadata else {"prm": "none", "as_metadata": "none"}
    server = remote(auth_methods=["private_key_jwt"], registration=False,
                    client_keys={"svc": public.decode()}, issuer_path=issuer_path, **bare)
    if not metadata:
        server.audience = server.base + "/token"
    flags = ("--token-url", server.issuer + "/token") if given else ()
    client = service(clients, server, "--client-key", str(tmp_path / "key.pem"), *flags)
    assert tools_of(client) == ["echo", "admin"]
    [request] = server.token_requests
    assert request["client_assertion_type"].endswith("jwt-bearer")
    header = request["client_assertion"].split(".")[0]
    alg = base64.urlsafe_b64decode(header + "==").decode()
    assert ('"RS256"' if kind == "rsa" else '"ES256"') in alg
    claims = request["client_assertion"].split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(claims + "=="))["aud"] == server.audience
    assert "client_secret" not in request
    assert request["client_assertion"] not in client.stderr()


def test_key_and_secret_together_is_an_error(clients, tmp_path):
    (tmp_path / "key.pem").write_text("not a key")
    client = clients("--client-id", "svc", "--client-secret", "s", "--client-key",
                     str(tmp_path / "key.pem"), "http://127.0.0.1:9/mcp")
    assert client.proc.wait(15) == 1
    assert "not both" in client.stderr()
    bad = clients("--client-id", "svc", "--client-key", str(tmp_path / "key.pem"),
                  "http://127.0.0.1:9/mcp")
    assert bad.proc.wait(15) == 1
    assert "is not an unencrypted PEM private key" in bad.stderr()
