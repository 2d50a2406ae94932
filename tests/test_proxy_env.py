"""The proxy and CA variables in-process: which proxy a URL goes through (as requests decides
it with ``trust_env``), what a malformed variable says, which CA bundle wins, and that the
POST fast path is handed over to requests exactly when a proxy applies. The real proxy and
CA are test_client_proxy.py's."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.config.network import check_proxy, env_proxies, tls_verify
from mcp_proxy.errors import ConfigError
from mcp_proxy.upstream.poster import Poster
from mcp_proxy.upstream.proxy_env import EnvSession

VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
             "CURL_CA_BUNDLE", "SSL_CERT_FILE", "REQUEST_METHOD")
PROXY = "http://proxy.corp:3128"

pytest_plugins = ["forward_proxy"]  # the private CA


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.mark.parametrize("env,url,expected", [
    ({}, "https://mcp.example/mcp", None),
    ({"HTTPS_PROXY": PROXY}, "https://mcp.example/mcp", PROXY),
    ({"HTTPS_PROXY": PROXY}, "http://mcp.example/mcp", None),
    ({"HTTP_PROXY": PROXY}, "http://mcp.example/mcp", PROXY),
    ({"ALL_PROXY": PROXY}, "https://mcp.example/mcp", PROXY),
    ({"ALL_PROXY": "http://all:1", "HTTPS_PROXY": PROXY}, "https://mcp.example/mcp", PROXY),
    ({"https_proxy": PROXY, "HTTPS_PROXY": "http://upper:1"}, "https://a.example/", PROXY),
    ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://mcp.example/mcp", PROXY),  # scheme added
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "mcp.example"}, "https://mcp.example/mcp", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".example"}, "https://mcp.example/mcp", None),
    ({"HTTPS_PROXY": PROXY, "no_proxy": "example"}, "https://mcp.example/mcp", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "other.example"}, "https://mcp.example/mcp", PROXY),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/mcp", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, "https://11.1.2.3/mcp", PROXY),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "mcp.example:8443"}, "https://mcp.example:8443/", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, "https://mcp.example/mcp", None),
    ({"HTTPS_PROXY": ""}, "https://mcp.example/mcp", None),
])
def test_the_proxy_of_a_url_is_the_one_requests_picks(clean, env, url, expected):
    for name, value in env.items():
        clean.setenv(name, value)
    session = EnvSession(env_proxies())
    assert session.proxy_for(url) == expected
    reference = requests.Session()  # trust_env: what requests itself would do
    settings_ = reference.merge_environment_settings(url, {}, False, True, None)
    picked = requests.utils.select_proxy(url, settings_["proxies"])
    assert (requests.utils.prepend_scheme_if_needed(picked, "http") if picked else None) \
        == expected
    assert EnvSession({}).proxy_for(url) is None


def test_the_session_reads_nothing_else_of_the_environment(clean, tmp_path):
    clean.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine mcp.example login ann password s3cret\n")
    clean.setenv("REQUESTS_CA_BUNDLE", "/no/such/bundle.pem")
    session = EnvSession(env_proxies())
    assert session.trust_env is False
    prepared = session.prepare_request(requests.Request("GET", "https://mcp.example/mcp"))
    assert "Authorization" not in prepared.headers
    merged = session.merge_environment_settings(prepared.url, {}, False, True, None)
    assert merged["verify"] is True and merged["proxies"] == {}


def test_a_redirect_takes_the_proxy_of_its_new_origin(clean):
    clean.setenv("HTTPS_PROXY", PROXY)
    clean.setenv("NO_PROXY", "inside.example")
    session = EnvSession(env_proxies())
    inside = requests.Request("GET", "https://inside.example/x").prepare()
    outside = requests.Request("GET", "https://outside.example/x").prepare()
    assert session.rebuild_proxies(inside, {"https": PROXY}) == {}
    assert session.rebuild_proxies(outside, {}) == {"https": PROXY}


@pytest.mark.parametrize("env,url,fast", [
    ({}, "http://127.0.0.1:9/mcp", True),
    ({"HTTP_PROXY": PROXY}, "http://127.0.0.1:9/mcp", False),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:9/mcp", True),
    ({"HTTPS_PROXY": PROXY}, "http://127.0.0.1:9/mcp", True),
])
def test_the_fast_path_is_handed_over_exactly_when_a_proxy_applies(clean, env, url, fast):
    for name, value in env.items():
        clean.setenv(name, value)
    assert Poster(EnvSession(env_proxies()), url, (1, 1)).fast is fast


@pytest.mark.parametrize("value,why", [
    ("socks5://127.0.0.1:1080", "only http:// and https:// proxies"),
    ("http://[::1", "is not a proxy URL"),
    ("http://127.0.0.1:99999", "is not a proxy URL"),
    ("http://ann:s3cret@proxy .corp:3128", "whitespace"),
    ("http://ann:s3cret@proxy.corp:3128\n", "control character"),
    ("http://", "is not a proxy URL"),
])
def test_a_malformed_variable_is_named_and_masked(clean, value, why):
    clean.setenv("https_proxy", value)
    with pytest.raises(ConfigError) as refused:
        env_proxies()
    text = str(refused.value)
    assert text.startswith("https_proxy=") and why in text and "--no-proxy-env" in text
    assert "s3cret" not in text and "\n" not in text


def test_a_malformed_variable_of_another_scheme_is_not_read(clean):
    clean.setenv("FTP_PROXY", "socks5://nowhere")
    clean.setenv("HTTPS_PROXY", PROXY)
    assert env_proxies() == {"https": (PROXY, "HTTPS_PROXY")}


PASSWORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12)


@settings(max_examples=200, deadline=None, database=None)
@given(value=st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, password, host: f"{scheme}ann:{password}@{host}",
              st.sampled_from(["http://", "https://", "socks5://", "", "ftp://"]), PASSWORD,
              st.text(max_size=30))))
def test_any_variable_value_is_a_proxy_url_or_one_masked_line(value):
    try:
        url = check_proxy("HTTPS_PROXY", value)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith("HTTPS_PROXY=")
        if "ann:" in value and "@" in value:
            password = value.split("ann:", 1)[1].rsplit("@", 1)[0]
            assert f"ann:{password}@" not in text or password == "***"
        return
    parsed = requests.utils.urlparse(url)
    assert parsed.scheme in ("http", "https") and parsed.hostname


def test_the_ca_bundle_the_flag_then_the_variables(clean, tmp_path, private_ca):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(private_ca.ca).read_text())
    other = tmp_path / "other.pem"
    other.write_text(Path(private_ca.ca).read_text())
    assert tls_verify(None) is True
    clean.setenv("SSL_CERT_FILE", str(other))
    assert tls_verify(None) == str(other)
    clean.setenv("CURL_CA_BUNDLE", str(bundle))
    assert tls_verify(None) == str(bundle)
    clean.setenv("REQUESTS_CA_BUNDLE", str(other))
    assert tls_verify(None) == str(other)
    assert tls_verify("true") == str(other)  # --verify-ssl alone: verify, as configured
    assert tls_verify(str(bundle)) == str(bundle)
    assert tls_verify("false") is False
    assert tls_verify(str(tmp_path)) == str(tmp_path)  # a directory of certificates


@pytest.mark.parametrize("content", [None, "", "-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_a_bundle_that_is_not_one_is_one_line(clean, tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    clean.setenv("CURL_CA_BUNDLE", str(path))
    with pytest.raises(ConfigError) as refused:
        tls_verify(None)
    assert str(refused.value).startswith("CURL_CA_BUNDLE: ")
    assert "--verify-ssl PATH" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="^--verify-ssl: "):
        tls_verify(str(path))

