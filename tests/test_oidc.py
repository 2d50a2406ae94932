"""The proxy as an OAuth 2.1 resource server, against a real authorization server
(npm oidc-provider, tests/oidc_kit.py): metadata, challenges, good tokens end to end with the
official SDK client, every refusal, key rotation, introspection, and a token that goes no
further than the proxy."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import shlex
import threading
import time

import jwt
import pytest
import redis
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, ProxyProcess, rpc, run_driver

pytest_plugins = ["oidc_kit"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def start(proxy_factory, provider, *flags: str, server=RAW_SERVER) -> ProxyProcess:
    return proxy_factory("--oauth-issuer", provider.issuer, *flags,
                         "--named-server", "two", shlex.join(server), "--", *server)


def initialize(base: str, token: str | None, path: str = "/mcp") -> requests.Response:
    headers = dict(STREAM_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(base + path, headers=headers, timeout=15,
                         json=rpc("initialize", 0, **INIT_PARAMS))


def challenge(answer: requests.Response) -> str:
    return answer.headers.get("WWW-Authenticate", "")


def test_metadata_of_every_endpoint_and_the_challenge_without_a_token(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider, "--oauth-scope", "mcp:tools", "--allow-origin",
                  "http://app.example")
    for path in ("/mcp", "/sse", "/servers/two/mcp", "/servers/two/sse"):
        meta = requests.get(proxy.base + WELL_KNOWN + path, timeout=10)
        assert meta.status_code == 200, (path, meta.text)
        assert meta.json() == {"resource": proxy.base + path,
                               "authorization_servers": [provider.issuer],
                               "scopes_supported": ["mcp:tools"],
                               "bearer_methods_supported": ["header"],
                               "resource_name": "mcp-proxy"}
        assert meta.headers["Access-Control-Allow-Origin"] == "*"
    assert requests.get(proxy.base + WELL_KNOWN, timeout=10).json()["resource"] \
        == proxy.base + "/mcp"
    for path in ("/status", "/servers/three/mcp", "/mcp/x"):
        assert requests.get(proxy.base + WELL_KNOWN + path, timeout=10).status_code == 404
    refused = requests.post(proxy.base + "/mcp", json=rpc("initialize", 0, **INIT_PARAMS),
                            headers={**STREAM_HEADERS, "Origin": "http://app.example"},
                            timeout=10)
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]
    assert challenge(refused) == (f'Bearer resource_metadata="{proxy.base}{WELL_KNOWN}/mcp", '
                                  f'scope="mcp:tools"')
    posted = requests.post(proxy.base + "/servers/two/messages/?session_id=x", timeout=10,
                           json=rpc("ping"))
    assert posted.status_code == 401
    assert f'{WELL_KNOWN}/servers/two/sse"' in challenge(posted)
    # the probes stay open
    assert requests.get(proxy.base + "/healthz", timeout=10).status_code == 200
    proxy.expect(r"OAuth: refused POST /mcp from 127.0.0.1: no token was sent")


def test_a_good_token_works_end_to_end_with_the_sdk_client(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider, "--oauth-scope", "mcp:tools", "--log-calls")
    for transport, path in (("streamable", "/mcp"), ("sse", "/sse"),
                            ("streamable", "/servers/two/mcp")):
        token = provider.token(proxy.base + path, scope="mcp:tools")
        report = run_driver(transport, proxy.base + path, "tools", "echo",
                            extra=("--header", "Authorization", f"Bearer {token}"))
        assert "echo" in report["tools"], report
        assert "error" not in report["echo"], report
    # the audit line names the caller by its principal: iss and sub, digested
    principal = hashlib.sha256(f"{provider.issuer}\0proxy-tests".encode()).hexdigest()[:16]
    proxy.expect(rf'mcp_proxy.audit: .* caller="127\.0\.0\.1 sub:{principal}"')
    # a token for one endpoint is refused at another (RFC 8707: its audience is that one)
    token = provider.token(proxy.base + "/servers/two/mcp", scope="mcp:tools")
    refused = initialize(proxy.base, token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in challenge(refused)
    assert "another resource" in refused.text


def forged_variants(provider, audience: str) -> dict[str, str]:
    """Tokens the proxy must refuse, each for its own reason."""
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": provider.issuer, "sub": "mallory", "aud": audience, "iat": now,
              "exp": now + 300, "scope": "mcp:tools mcp:admin"}
    public_pem = provider.keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    none_head = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": "k1"}).encode())
    return {
        "another resource": provider.token("https://elsewhere.example/mcp"),
        "expired": provider.forge({"aud": audience, "iat": now - 900, "exp": now - 600}),
        "not valid yet": provider.forge({"aud": audience, "nbf": now + 600}),
        "another key": provider.forge({"aud": audience}, kid="k1", key=stranger),
        "unknown kid": provider.forge({"aud": audience}, kid="k9", key=stranger),
        "alg none": f"{none_head}.{body}.",
        "hmac with the public key": f"{head}.{body}.{b64(mac)}",
        "another issuer": provider.forge({"aud": audience, "iss": "https://evil.example"}),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"},
                             provider.keys["k1"], algorithm="RS256", headers={"kid": "k1"}),
        "no audience": provider.forge({}),
        "garbage": "not-a-token",
        "three dots of junk": "a.b.c",
    }


def test_every_bad_token_is_refused_with_invalid_token(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider)
    good = provider.token(proxy.base + "/mcp")
    assert initialize(proxy.base, good).status_code == 200
    for name, token in forged_variants(provider, proxy.base + "/mcp").items():
        refused = initialize(proxy.base, token)
        assert refused.status_code == 401, (name, refused.status_code, refused.text)
        assert 'error="invalid_token"' in challenge(refused), name
        assert token not in proxy.stderr(), f"{name}: the token was logged"
    # a token minted for another server on this host, replayed with a Host naming its port
    other = provider.token("http://127.0.0.1:9/mcp")
    replayed = requests.post(proxy.base + "/mcp", json=rpc("initialize", 0, **INIT_PARAMS),
                             headers={**STREAM_HEADERS, "Host": "127.0.0.1:9",
                                      "Authorization": f"Bearer {other}"}, timeout=10)
    assert replayed.status_code == 401 and "another port" in replayed.text, replayed.text
    basic = requests.post(proxy.base + "/mcp", headers={**STREAM_HEADERS,
                          "Authorization": "Basic dXNlcjpwdw=="}, json=rpc("ping"), timeout=10)
    assert basic.status_code == 401 and "not a Bearer token" in basic.text
    assert initialize(proxy.base, good).status_code == 200
    assert good not in proxy.stderr()


def test_a_missing_scope_is_403_then_a_token_with_it_works(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider, "--oauth-scope", "mcp:tools",
                  "--oauth-scope", "mcp:admin")
    narrow = provider.token(proxy.base + "/mcp", scope="mcp:tools")
    refused = initialize(proxy.base, narrow)
    assert refused.status_code == 403
    assert challenge(refused) == (f'Bearer error="insufficient_scope", '
                                  f'scope="mcp:tools mcp:admin", '
                                  f'resource_metadata="{proxy.base}{WELL_KNOWN}/mcp"')
    assert "lacks scope mcp:admin" in refused.text
    stepped_up = provider.token(proxy.base + "/mcp", scope="mcp:tools mcp:admin")
    assert initialize(proxy.base, stepped_up).status_code == 200


def test_key_rotation_while_sessions_are_open(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider)
    old = provider.token(proxy.base + "/mcp")
    opened = initialize(proxy.base, old)
    assert opened.status_code == 200
    session = {**STREAM_HEADERS, "Mcp-Session-Id": opened.headers["Mcp-Session-Id"]}
    assert provider.rotate() == "k2"
    new = provider.token(proxy.base + "/mcp")
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    second = initialize(proxy.base, new)  # an unknown kid: the JWKS is fetched again
    assert second.status_code == 200, second.text
    for token in (old, new):  # the open session goes on with either of its caller's tokens
        listed = requests.post(proxy.base + "/mcp", json=rpc("tools/list", 2), timeout=10,
                               headers={**session, "Authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and "echo" in listed.text, listed.text
    proxy.expect(r"OAuth: 2 signing key\(s\)")
    # another unknown kid within the minute: refused without a fetch (forged kids cannot
    # make the proxy a load on the issuer)
    unknown = provider.forge({"aud": proxy.base + "/mcp"}, kid="k9", key=provider.keys["k1"])
    assert initialize(proxy.base, unknown).status_code == 401
    assert sum("signing key(s)" in line for line in proxy.lines) == 2


def test_a_jwks_outage_keeps_the_keys_held_and_an_unreachable_issuer_is_503(
        oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider)
    assert initialize(proxy.base, provider.token(proxy.base + "/mcp")).status_code == 200
    provider.stop()
    forged_later = provider.forge({"aud": proxy.base + "/mcp", "sub": "later"})
    assert initialize(proxy.base, forged_later).status_code == 200  # k1, still held
    unknown = provider.forge({"aud": proxy.base + "/mcp"}, kid="k2")
    assert initialize(proxy.base, unknown).status_code == 401
    down = oidc()
    down.stop()
    lonely = start(proxy_factory, down)
    answer = initialize(lonely.base, down.forge({"aud": lonely.base + "/mcp"}))
    assert answer.status_code == 503 and "authorization server" in answer.text
    lonely.expect(r"OAuth: cannot check a token")


def test_the_callers_token_never_reaches_the_server_process(oidc, proxy_factory, tmp_path):
    provider = oidc()
    seen = tmp_path / "seen"
    child = ["sh", "-c", f'env > {seen}.env; tee {seen}.stdin | exec "$0" "$@"', *RAW_SERVER]
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--", *child)
    token = provider.token(proxy.base + "/mcp")
    report = run_driver("streamable", proxy.base + "/mcp", "tools", "echo",
                        extra=("--header", "Authorization", f"Bearer {token}"))
    assert "echo" in report["tools"], report
    stdin = (tmp_path / "seen.stdin").read_text()
    assert "tools/call" in stdin
    for part in token.split("."):
        assert part not in stdin and part not in (tmp_path / "seen.env").read_text()


def test_opaque_tokens_are_introspected(oidc, proxy_factory):
    provider = oidc(opaque=True)
    proxy = start(proxy_factory, provider, "--oauth-scope", "mcp:tools",
                  "--oauth-introspection-url", provider.issuer + "/token/introspection",
                  "--oauth-introspection-client-id", "proxy-tests",
                  "--oauth-introspection-client-secret", "s3cret-for-tests")
    token = provider.token(proxy.base + "/mcp")
    assert token.count(".") != 2
    report = run_driver("streamable", proxy.base + "/mcp", "tools", "echo",
                        extra=("--header", "Authorization", f"Bearer {token}"))
    assert "echo" in report["tools"], report
    refused = initialize(proxy.base, "opaque-and-unknown")
    assert refused.status_code == 401 and "not active" in refused.text
    narrow = provider.token(proxy.base + "/mcp", scope="mcp:admin")
    assert initialize(proxy.base, narrow).status_code == 403


@pytest.mark.parametrize(("flags", "said"), [
    (["--oauth-scope", "x"], "--oauth-scope needs --oauth-issuer"),
    (["--oauth-issuer", "http://idp.example.com"], "over https"),
    (["--oauth-issuer", "ftp://idp.example.com"], "expected an https:// URL"),
    (["--oauth-issuer", "https://idp.example.com/?x=1"], "no query"),
    (["--oauth-issuer", "https://idp.example.com", "--oauth-scope", 'a"b'], "a scope is"),
    (["--oauth-issuer", "https://idp.example.com", "--host", "0.0.0.0"],
     "needs --oauth-audience"),
    (["--oauth-issuer", "https://idp.example.com", "--allow-host", "*"],
     "needs --oauth-audience"),
    (["--oauth-issuer", "https://idp.example.com", "--oauth-introspection-url",
      "https://idp.example.com/introspect"], "needs --oauth-introspection-client-id"),
])
def test_impossible_oauth_flags_are_refused_with_one_line(flags, said):
    done = ProxyProcess(*flags, "--", *RAW_SERVER)
    assert done.proc.wait(30) == 1
    done._reader.join(10)
    errors = [line for line in done.lines if "ERROR" in line]
    assert len(errors) == 1 and said in errors[0], done.stderr()
    assert "Traceback" not in done.stderr()


def test_without_pyjwt_the_flag_is_refused_with_the_extra_to_install(tmp_path):
    blocker = tmp_path / "jwt"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    done = ProxyProcess("--oauth-issuer", "https://idp.example.com", "--", *RAW_SERVER,
                        env={"PYTHONPATH": str(tmp_path)})
    assert done.proc.wait(30) == 1
    done._reader.join(10)
    assert "the 'oauth' extra" in done.stderr() and "Traceback" not in done.stderr()




JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["none", "None", "HS256", "RS256", "PS256", "ES256", "EdDSA", "",
                             "RS1"]) | JSON_VALUES},
    optional={"kid": st.sampled_from(["k1", "k2", "", "../../etc"]) | JSON_VALUES,
              "typ": st.sampled_from(["at+jwt", "JWT"]), "jku": st.just("http://evil/"),
              "crit": JSON_VALUES})


@st.composite
def jwt_shaped(draw, issuer: str, audience: str) -> str:
    claims = draw(st.fixed_dictionaries({}, optional={
        "iss": st.sampled_from([issuer, issuer + "/"]) | JSON_VALUES,
        "aud": st.sampled_from([audience, [audience, "x"]]) | JSON_VALUES,
        "exp": st.integers(0, 2**40) | JSON_VALUES, "nbf": JSON_VALUES,
        "sub": JSON_VALUES, "scope": JSON_VALUES}))
    parts = [b64(json.dumps(draw(HEADERS)).encode()), b64(json.dumps(claims).encode()),
             b64(draw(st.binary(max_size=300)))]
    if draw(st.booleans()):  # and now and then not quite base64url, or not quite three parts
        index = draw(st.integers(0, 2))
        parts[index] = draw(st.sampled_from(["", "=", "%%", "é", parts[index] + "=="]))
    return ".".join(parts[:draw(st.sampled_from([3, 3, 3, 2, 1]))])


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=200)


def test_hostile_authorization_headers_are_refused_never_a_500(oidc, proxy_factory):
    provider = oidc()
    proxy = start(proxy_factory, provider, "--oauth-scope", "mcp:tools")
    audience = proxy.base + "/mcp"
    http = requests.Session()

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(value=st.one_of(
        jwt_shaped(provider.issuer, audience).map(lambda token: "Bearer " + token),
        HEADER_TEXT.map(lambda text: "Bearer " + text), HEADER_TEXT,
        st.sampled_from(["Bearer", "Bearer ", "bearer  x", "DPoP x", "Bearer a.b.c.d.e"])),
        where=st.sampled_from([("POST", "/mcp"), ("GET", "/sse"),
                               ("POST", "/messages/?session_id=x"),
                               ("POST", "/servers/two/mcp")]))
    def check(value: str, where: tuple[str, str]) -> None:
        value = value.strip(" \t")  # a header value's own edges are not part of it
        try:
            answer = http.request(where[0], proxy.base + where[1], json=rpc("ping"),
                                  headers={**STREAM_HEADERS, "Authorization": value},
                                  timeout=10)
        except requests.exceptions.InvalidHeader:
            return  # a value requests itself will not send
        assert answer.status_code in (400, 401), (value, answer.status_code, answer.text)
        if answer.status_code == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer resource_metadata=")

    check()

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(claims=st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "sub", "scope",
                                                   "scp", "client_id", "iat"]), JSON_VALUES))
    def signed(claims: dict) -> None:
        # claims of every type, signed with the issuer's own key: refused or taken, not a 500
        head = b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
        signing = f"{head}.{b64(json.dumps(claims).encode())}"  # PyJWT refuses odd claims
        signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing.encode(),
                                                           provider.keys["k1"])
        token = f"{signing}.{b64(signature)}"
        answer = http.post(audience, json=rpc("initialize", 0, **INIT_PARAMS), timeout=10,
                           headers={**STREAM_HEADERS, "Authorization": f"Bearer {token}"})
        assert answer.status_code in (200, 401, 403), (claims, answer.text)

    signed()
    assert "Traceback" not in proxy.stderr()
    good = provider.token(audience, scope="mcp:tools")
    assert initialize(proxy.base, good).status_code == 200


def test_a_forwarded_request_is_checked_where_it_arrives_and_carries_no_token(
        oidc, proxy_factory, redis_server):
    provider = oidc()
    audience = "http://mcp.test/mcp"  # one public URL in front of both workers
    flags = ("--oauth-issuer", provider.issuer, "--oauth-audience", audience,
             "--redis-url", redis_server.url, "--log-calls", "--", *RAW_SERVER)
    env = {"MCP_PROXY_ROUTE_HEADER": "1"}
    a, b = proxy_factory(*flags, env=env), proxy_factory(*flags, env=env)
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    token = provider.token(audience)
    opened = initialize(a.base, token)
    assert opened.status_code == 200, opened.text
    session = {**STREAM_HEADERS, "Mcp-Session-Id": opened.headers["Mcp-Session-Id"]}
    call = rpc("tools/call", 2, name="echo", arguments={"text": "hi"})
    refused = requests.post(b.base + "/mcp", json=call, headers=session, timeout=15)
    assert refused.status_code == 401  # B checks before it forwards
    seen: list[str] = []  # every command Redis runs while the call crosses the bus
    monitor = redis.Redis.from_url(redis_server.url).monitor()
    monitor.__enter__()

    def watch() -> None:
        with contextlib.suppress(ValueError, OSError, redis.RedisError):  # the disconnect
            for event in monitor.listen():
                seen.append(str(event["command"]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answered = requests.post(b.base + "/mcp", json=call, timeout=15,
                             headers={**session, "Authorization": f"Bearer {token}"})
    assert answered.status_code == 200 and "hi" in answered.text, answered.text
    deadline = time.monotonic() + 10
    while not any("echo" in command for command in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    monitor.connection.disconnect()  # ends listen() in the watcher
    watcher.join(10)
    assert any("echo" in command for command in seen), seen[-20:]
    assert not [command for command in seen if token.split(".")[2] in command]
    assert answered.headers["Mcp-Proxy-Route"].split()[1] == "forwarded"
    principal = hashlib.sha256(f"{provider.issuer}\0proxy-tests".encode()).hexdigest()[:16]
    # the call ran on A, whose audit line names the session's caller by its principal
    a.expect(rf'mcp_proxy.audit: .*caller="127\.0\.0\.1 sub:{principal}"')


def test_a_servers_scopes_are_needed_to_use_it(oidc, proxy_factory, tmp_path):
    provider = oidc()
    config = tmp_path / "servers.json"
    command = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}
    config.write_text(json.dumps({"mcpServers": {
        "open": command, "admin": {**command, "scopes": ["mcp:admin"]}}}))
    proxy = proxy_factory("--oauth-issuer", provider.issuer, "--oauth-scope", "mcp:tools",
                          "--named-server-config", str(config))
    base = proxy.base + "/servers"
    meta = requests.get(f"{proxy.base}{WELL_KNOWN}/servers/admin/mcp", timeout=10).json()
    assert meta["scopes_supported"] == ["mcp:tools", "mcp:admin"]
    assert requests.get(f"{proxy.base}{WELL_KNOWN}/servers/open/sse", timeout=10).json()[
        "scopes_supported"] == ["mcp:tools"]
    narrow = provider.token(base + "/admin/mcp", scope="mcp:tools")
    refused = initialize(base, narrow, "/admin/mcp")
    assert refused.status_code == 403
    assert 'scope="mcp:tools mcp:admin"' in challenge(refused)
    assert initialize(base, narrow, "/admin/mcp/").status_code in (403, 404)  # no way around
    assert initialize(base, provider.token(base + "/open/mcp", scope="mcp:tools"),
                      "/open/mcp").status_code == 200
    assert 'scope="mcp:tools mcp:admin"' in challenge(initialize(base, None, "/admin/mcp"))
    wide = provider.token(base + "/admin/mcp", scope="mcp:tools mcp:admin")
    assert initialize(base, wide, "/admin/mcp").status_code == 200


@pytest.mark.parametrize(("entry", "said"), [
    ({"scopes": ["mcp:admin"]}, '"scopes" needs --oauth-issuer'),
    ({"scopes": ["two words"]}, "an OAuth scope is printable ASCII"),
    ({"scopes": "mcp:admin"}, "$.mcpServers.one.scopes"),
    ({"toolScopes": {"echo": "mcp:admin"}}, '"toolScopes" needs --oauth-issuer'),
    ({"toolScopes": {"echo": "two words"}},
     "$.mcpServers.one.toolScopes.echo: an OAuth scope is printable"),
    ({"toolScopes": {"": "x"}}, "$.mcpServers.one.toolScopes[\"\"]: must not be empty"),
    ({"toolScopes": ["echo"]}, "$.mcpServers.one.toolScopes: expected an object"),
])
def test_a_bad_scopes_entry_is_refused_with_one_line(tmp_path, entry, said):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"one": {
        "command": RAW_SERVER[0], "args": RAW_SERVER[1:], **entry}}}))
    done = ProxyProcess("--named-server-config", str(config))
    assert done.proc.wait(30) == 1
    done._reader.join(10)
    assert said in done.stderr() and "Traceback" not in done.stderr(), done.stderr()


def test_keys_and_tokens_together_each_checked_by_its_own_rules(oidc, proxy_factory):
    provider = oidc()
    key = "team-key-0123456789"
    proxy = start(proxy_factory, provider, "--auth-token", key)
    token = provider.token(proxy.base + "/mcp")
    # a key of ours passes in either header; a good token passes too
    assert initialize(proxy.base, key).status_code == 200
    keyed = requests.post(proxy.base + "/mcp", json=rpc("initialize", 0, **INIT_PARAMS),
                          headers={**STREAM_HEADERS, "X-API-Key": key}, timeout=15)
    assert keyed.status_code == 200, keyed.text
    assert initialize(proxy.base, token).status_code == 200
    # anything else is the token check's: OAuth's challenge, never the key ring's refusal
    for sent in (None, "not-a-key-nor-a-token"):
        refused = initialize(proxy.base, sent)
        assert refused.status_code == 401
        assert "resource_metadata=" in challenge(refused), challenge(refused)
    assert not [line for line in proxy.lines if "unknown key" in line or "no key" in line]
    # each caller's session is its own: the token's subject cannot use the key's session
    session = initialize(proxy.base, key).headers["Mcp-Session-Id"]
    other = requests.post(proxy.base + "/mcp", json=rpc("tools/list", 1), timeout=15,
                          headers={**STREAM_HEADERS, "Mcp-Session-Id": session,
                                   "Authorization": f"Bearer {token}"})
    assert other.status_code == 404, other.text
