"""The pure parts of sign-in: challenges, metadata URLs, issuer and resource rules, ports."""

from __future__ import annotations

import base64
import errno
import json
import os
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.errors import AuthError
from mcp_proxy.upstream.oauth import auth
from mcp_proxy.upstream.oauth.browser import browser_commands, default_port, port_error
from mcp_proxy.upstream.oauth.discovery import issuers_match, metadata_urls, resource_covers
from mcp_proxy.upstream.oauth.store import Store, well_formed
from mcp_proxy.upstream.oauth.wire import Client, parse_challenges


def test_challenges_with_quoted_strings_and_several_schemes():
    header = ('Basic realm="r", Bearer error="insufficient_scope", scope="a b", '
              'resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", '
              'error_description="say \\"hi\\", ok"')
    found = parse_challenges(header)
    assert found["basic"] == {"realm": "r"}
    bearer = found["bearer"]
    assert bearer["scope"] == "a b" and bearer["error"] == "insufficient_scope"
    assert bearer["resource_metadata"].endswith("/oauth-protected-resource/mcp")
    assert bearer["error_description"] == 'say "hi", ok'
    assert parse_challenges("Negotiate abc123==, BEARER Scope=x")["bearer"] == {"scope": "x"}
    assert parse_challenges("Bearer") == {"bearer": {}}


def test_metadata_urls_in_the_spec_order():
    assert metadata_urls("https://a.example/tenant1/") == [
        "https://a.example/.well-known/oauth-authorization-server/tenant1",
        "https://a.example/.well-known/openid-configuration/tenant1",
        "https://a.example/tenant1/.well-known/openid-configuration"]
    assert metadata_urls("https://a.example/") == [
        "https://a.example/.well-known/oauth-authorization-server",
        "https://a.example/.well-known/openid-configuration"]


def test_issuer_match_tolerates_only_a_root_slash():
    assert issuers_match("https://a.example/", "https://a.example")
    assert issuers_match("https://a.example", "https://a.example/")
    assert not issuers_match("https://a.example/t/", "https://a.example/t")
    assert not issuers_match("https://b.example", "https://a.example")


@pytest.mark.parametrize("resource, ok", [
    ("https://h.example/mcp", True), ("https://H.example/mcp/", True),
    ("https://h.example/", True), ("https://h.example/mc", False),
    ("https://h.example/other", False), ("http://h.example/mcp", False),
    ("https://h.example:8443/mcp", False)])
def test_resource_must_cover_the_server_url(resource, ok):
    assert resource_covers(resource, "https://h.example/mcp") is ok


def test_basic_client_auth_form_encodes_and_sends_the_secret_once():
    client = Client("id:1", "client_secret_basic", "s p&c")
    data, headers = {}, {}
    client.authenticate("https://as/token", data, headers)
    assert data == {}
    assert base64.b64decode(headers["Authorization"][6:]) == b"id%3A1:s+p%26c"


def test_browser_commands_honour_browser(monkeypatch):
    monkeypatch.setenv("BROWSER", "/bin/mine --new %s:/usr/bin/other")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    commands = browser_commands("http://x/?a=1")
    assert commands[:2] == [["/bin/mine", "--new", "http://x/?a=1"],
                            ["/usr/bin/other", "http://x/?a=1"]]


def test_default_port_is_stable_and_unprivileged():
    assert default_port("abc") == default_port("abc")
    assert 3335 <= default_port("abc") < 3335 + 45816


def test_after_a_failed_sign_in_only_a_client_request_tries_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MCP_PROXY_CONFIG_DIR", str(tmp_path))
    signer = auth.OAuthSignIn(ClientSettings(url="http://127.0.0.1:9/mcp"))
    failure = AuthError("sign-in not completed")
    signer._failed = (time.monotonic() - auth.FAILED_PAUSE - 1, failure)  # pause over
    with pytest.raises(AuthError) as raised:
        signer.renew({}, None, background=True)  # a stream reopening: no new browser
    assert raised.value is failure
    monkeypatch.setattr(auth, "discover", lambda *args: (_ for _ in ()).throw(
        AuthError("discovery ran")))
    with pytest.raises(AuthError, match="discovery ran"):
        signer.renew({}, None)  # the client's own request: a new sign-in starts


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("code", [errno.EADDRINUSE, errno.EACCES])
def test_a_callback_port_that_cannot_be_had_is_one_line_naming_port_and_flag(explicit, code):
    text = port_error(4000, explicit, OSError(code, os.strerror(code)))
    assert ("port 4000" if explicit else "ports 4000-4007") in text
    assert "--oauth-callback-port" in text and "\n" not in text
    assert ("in use by another program" in text) == (code == errno.EADDRINUSE)
    assert code == errno.EADDRINUSE or os.strerror(code) in text


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = st.sampled_from(["access_token", "refresh_token", "expires_at", "scope", "issuer",
                          "token_endpoint", "client_id", "resource", "other"])


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(FIELDS, JSON, max_size=6).map(
                     lambda v: json.dumps(v).encode())))
def test_the_token_cache_reads_anything_without_raising(content):
    with tempfile.TemporaryDirectory() as config:
        with pytest.MonkeyPatch.context() as patch:  # the store's root is read when made
            patch.setenv("MCP_PROXY_CONFIG_DIR", config)
            cache = Store("https://mcp.example/mcp")
        cache.path.mkdir(parents=True)
        (cache.path / "tokens.json").write_bytes(content)
        record = cache.tokens()
    assert record is None or well_formed(record)
    if record is not None:  # fit for a header, as the proxy sends it
        assert "\n" not in record["access_token"] and record["access_token"].strip()


def test_a_token_record_takes_only_a_sane_lifetime_and_text_scope():
    from types import SimpleNamespace

    from mcp_proxy.upstream.oauth.store import token_record, well_formed

    found = SimpleNamespace(issuer="https://as", resource="https://rs/mcp",
                            endpoint=lambda name: "https://as/token")
    client = SimpleNamespace(client_id="c", method="none")
    for lifetime in (True, -5, 0, float("inf"), float("nan"), 10**12, "3600", None):
        record = token_record({"access_token": "t", "expires_in": lifetime, "scope": ["x"]},
                              found, "asked", client, {"scope": "kept", "refresh_token": "r"})
        assert record["expires_at"] is None, lifetime
        assert record["scope"] == "kept" and record["refresh_token"] == "r"
        assert well_formed(record)  # what a sign-in stores, the cache reads back
    record = token_record({"access_token": "t", "expires_in": 60, "scope": "granted"},
                          found, "asked", client)
    assert 50 < record["expires_at"] - time.time() <= 60
    assert record["scope"] == "granted" and record["requested_scope"] == "asked"
