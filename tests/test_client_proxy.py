"""Client mode on a corporate network: a forward proxy from the environment (HTTPS_PROXY,
HTTP_PROXY, NO_PROXY, --no-proxy-env) and a private CA (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE,
SSL_CERT_FILE, --verify-ssl PATH), on every request: MCP over both transports (the POSTs of
the fast path too), discovery, registration and token requests.

The proxy is a real tinyproxy (forward_proxy.py): a request that went through it reaches the
server from 127.0.0.2 and is named in its log. The CA is made by the tests.
"""

from __future__ import annotations

import time

import pytest

# ruff: noqa: E402  (oauth_kit is a plugin too: its asserts are rewritten if registered first)
pytest.register_assert_rewrite("oauth_kit", "forward_proxy")
from forward_proxy import PROXIED_FROM, dead_port_url
from oauth_kit import tools_of
from test_client_remote import exchange, serve

from conftest import rpc

pytest_plugins = ["oauth_kit", "forward_proxy"]

NETWORK_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                     "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@pytest.fixture(autouse=True)
def clean_network(monkeypatch):
    """None of the runner's own proxy or CA variables reach the proxies under test."""
    for name in NETWORK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def plain_remote(request):
    """Starts test_client_remote.py's scripted Streamable HTTP remote (no auth)."""

    def start(tls=None):
        server, base = serve(tls=tls)
        request.addfinalizer(server.server_close)  # finalizers run last first: shutdown,
        request.addfinalizer(server.shutdown)  # then close
        return server, base

    return start


def one_error(client) -> str:
    """The process failed with one line that says why, and no traceback."""
    stderr = client.stderr()
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("scheme,transport", [
    ("https", "streamablehttp"), ("https", "sse"), ("http", "streamablehttp")])
def test_mcp_and_sign_in_go_through_the_proxy(auth_env, remote, clients, tinyproxy, private_ca,
                                              scheme, transport):
    """Every request of the client (discovery, registration, token, the MCP GET and POSTs,
    the fast path's included) reaches the server through the proxy; over TLS with the
    private CA from REQUESTS_CA_BUNDLE. The browser goes direct, as browsers do to loopback
    addresses (through tinyproxy, its callback was dropped now and then on a loaded
    machine: the sign-in then waited out the test)."""
    server = remote(tls=(private_ca.cert, private_ca.key) if scheme == "https" else None)
    port = server.server_address[1]
    forward = tinyproxy(connect_ports=[port])
    env = {f"{scheme.upper()}_PROXY": forward.url, "REQUESTS_CA_BUNDLE": private_ca.ca}
    path = "/mcp" if transport == "streamablehttp" else "/sse"
    if transport == "sse":
        server.sw["prm_resource"] = server.base + "/"  # one resource for /sse and /messages/
    client = clients("--transport", transport, server.base + path, env=env)
    assert tools_of(client) == ["echo", "admin"]
    answer = client.call(rpc("ping", 2))  # once an error here, in CI: the failure says which
    assert answer.get("result") == {}, (answer, client.stderr(), forward.log())
    assert client.close() == 0
    seen = {(method, path) for _, method, path in server.peers}
    assert {("POST", "/register"), ("POST", "/token")} <= seen
    assert any(path.startswith("/.well-known/") for _, path in seen)
    assert ("POST", "/mcp" if transport == "streamablehttp" else "/messages/") in seen
    ours = {peer for peer, _, path in server.peers if path != "/authorize"}  # the browser's
    assert ours == {PROXIED_FROM}, server.peers
    log = forward.log()
    if scheme == "https":
        assert f"CONNECT 127.0.0.1:{port} HTTP/1." in log
    else:
        assert f"POST http://127.0.0.1:{port}/mcp HTTP/1.1" in log
        assert f"POST http://127.0.0.1:{port}/token HTTP/1.1" in log


@pytest.mark.parametrize("how", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE",
                                 "--verify-ssl"])
def test_a_private_ca_from_a_variable_or_the_flag(plain_remote, clients, private_ca, how):
    _, base = plain_remote(tls=(private_ca.cert, private_ca.key))
    flags, env = (["--verify-ssl", private_ca.ca], {}) if how == "--verify-ssl" \
        else ([], {how: private_ca.ca})
    client = clients("--transport", "streamablehttp", *flags, base + "/mcp", env=env)
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0


def test_without_the_private_ca_the_certificate_is_refused(plain_remote, clients, private_ca):
    _, base = plain_remote(tls=(private_ca.cert, private_ca.key))
    client = clients("--transport", "streamablehttp", base + "/mcp")
    assert client.proc.wait(20) == 1
    line = one_error(client)
    assert "TLS verification failed" in line and "certificate verify failed" in line
    assert "--verify-ssl CA_BUNDLE" in line


def test_the_flag_wins_over_the_variables(plain_remote, clients, private_ca, tmp_path):
    _, base = plain_remote(tls=(private_ca.cert, private_ca.key))
    wrong = tmp_path / "other.pem"
    wrong.write_text(open(private_ca.cert).read())  # a certificate, but not the root
    client = clients("--transport", "streamablehttp", "--verify-ssl", private_ca.ca,
                     base + "/mcp", env={"REQUESTS_CA_BUNDLE": str(wrong)})
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0


@pytest.mark.parametrize("content", [None, "", "not a certificate\n"])
def test_a_ca_variable_naming_no_bundle_is_one_line(clients, tmp_path, content):
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_text(content)
    client = clients("https://127.0.0.1:9/mcp", env={"SSL_CERT_FILE": str(path)})
    assert client.proc.wait(15) == 1
    line = one_error(client)
    assert "SSL_CERT_FILE" in line and "--verify-ssl PATH" in line


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.0/8", "*"])
def test_no_proxy_is_honoured(plain_remote, clients, tinyproxy, no_proxy):
    server, base = plain_remote()
    forward = tinyproxy()
    client = clients("--transport", "streamablehttp", base + "/mcp",
                     env={"HTTP_PROXY": forward.url, "no_proxy": no_proxy})
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0
    assert "Request (file descriptor" not in forward.log()


def test_no_proxy_env_ignores_the_proxy_but_not_the_ca(plain_remote, clients, private_ca):
    _, base = plain_remote(tls=(private_ca.cert, private_ca.key))
    env = {"HTTPS_PROXY": dead_port_url(), "REQUESTS_CA_BUNDLE": private_ca.ca}
    client = clients("--transport", "streamablehttp", "--no-proxy-env", base + "/mcp", env=env)
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_that_is_down_is_named_with_its_password_masked(clients, scheme):
    proxy = dead_port_url("ann:s3cret@")
    variable = f"{scheme.upper()}_PROXY"
    client = clients("--start-timeout", "1", f"{scheme}://127.0.0.1:9/mcp",
                     env={variable: proxy})
    assert client.proc.wait(20) == 1
    line = one_error(client)
    shown = proxy.replace("s3cret", "***")
    assert f"the proxy {shown} (from {variable}) refused the connection" in line
    assert "s3cret" not in client.stderr()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_that_wants_credentials(plain_remote, clients, tinyproxy, private_ca, scheme):
    """407 is said at once (no retrying), with the fix; with the user and password in the
    variable the same proxy carries the requests."""
    server, base = plain_remote(tls=(private_ca.cert, private_ca.key) if scheme == "https"
                                else None)
    forward = tinyproxy(connect_ports=[server.server_address[1]], basic_auth=("ann", "s3cret"))
    env = {f"{scheme.upper()}_PROXY": forward.url, "REQUESTS_CA_BUNDLE": private_ca.ca}
    began = time.monotonic()
    client = clients("--start-timeout", "60", "--transport", "streamablehttp", base + "/mcp",
                     env=env)
    assert client.proc.wait(20) == 1
    assert time.monotonic() - began < 20
    line = one_error(client)
    assert f"the proxy {forward.url} (from {scheme.upper()}_PROXY) refused to carry the " \
           f"request: 407" in line
    assert "http://user:password@host:port" in line
    env[f"{scheme.upper()}_PROXY"] = forward.url.replace("://", "://ann:s3cret@")
    client = clients("--transport", "streamablehttp", base + "/mcp", env=env)
    assert exchange(client)["result"] == {"seen": "tools/list"}
    assert client.close() == 0
    assert "s3cret" not in client.stderr()


def test_a_proxy_that_will_not_tunnel_to_the_port(plain_remote, clients, tinyproxy,
                                                   private_ca):
    server, base = plain_remote(tls=(private_ca.cert, private_ca.key))
    forward = tinyproxy(connect_ports=[server.server_address[1] + 1])
    client = clients("--start-timeout", "60", "--transport", "streamablehttp", base + "/mcp",
                     env={"HTTPS_PROXY": forward.url, "REQUESTS_CA_BUNDLE": private_ca.ca})
    assert client.proc.wait(20) == 1
    line = one_error(client)
    assert f"the proxy {forward.url} (from HTTPS_PROXY) refused to carry the request: 403" \
        in line


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_that_cannot_reach_the_remote(clients, tinyproxy, scheme):
    """The proxy's 5xx (502 of most, tinyproxy's 500) may heal: retried for --start-timeout,
    then said naming the proxy."""
    port = int(dead_port_url().rpartition(":")[2])
    forward = tinyproxy(connect_ports=[port])
    client = clients("--start-timeout", "1", "--transport", "streamablehttp",
                     f"{scheme}://127.0.0.1:{port}/mcp",
                     env={f"{scheme.upper()}_PROXY": forward.url})
    assert client.proc.wait(20) == 1
    line = one_error(client)
    assert f"through the proxy {forward.url}" in line or \
        f"the proxy {forward.url} (from HTTPS_PROXY) refused to carry the request: 5" in line


@pytest.mark.parametrize("value,why", [
    ("socks5://127.0.0.1:1080", "only http:// and https:// proxies"),
    ("http://[::1", "is not a proxy URL"),
    ("http://127.0.0.1:99999", "is not a proxy URL"),
    ("http://ann:s3cret@proxy .example:3128", "whitespace"),
    ("http://", "is not a proxy URL"),
])
def test_a_malformed_proxy_variable_is_one_line(clients, value, why):
    client = clients("https://127.0.0.1:9/mcp", env={"https_proxy": value})
    assert client.proc.wait(15) == 1
    line = one_error(client)
    assert "https_proxy=" in line and why in line and "--no-proxy-env" in line
    assert "s3cret" not in client.stderr()
    client = clients("--no-proxy-env", "--start-timeout", "1", "https://127.0.0.1:9/mcp",
                     env={"https_proxy": value})
    assert client.proc.wait(15) == 1
    line = one_error(client)
    assert "https_proxy" not in line and "the proxy" not in line and "refused" in line



def test_check_config_reads_the_network_variables(clients, tmp_path):
    env = {"HTTPS_PROXY": "socks5://ann:s3cret@127.0.0.1:1080"}
    client = clients("--check-config", "https://127.0.0.1:9/mcp", env=env)
    assert client.proc.wait(15) == 1
    assert client.stderr() == "mcp-proxy: error: HTTPS_PROXY='socks5://ann:***@127.0.0.1:1080'" \
        ": only http:// and https:// proxies are supported; fix HTTPS_PROXY, or give " \
        "--no-proxy-env to ignore the proxy variables\n"
    client = clients("--check-config", "https://127.0.0.1:9/mcp",
                     env={"REQUESTS_CA_BUNDLE": str(tmp_path / "none.pem")})
    assert client.proc.wait(15) == 1
    assert "REQUESTS_CA_BUNDLE: no CA bundle at" in client.stderr()
    assert len(client.stderr().splitlines()) == 1
    client = clients("--check-config", "--no-proxy-env", "https://127.0.0.1:9/mcp", env=env)
    assert client.proc.wait(15) == 0
    assert "OK: client mode" in client.stderr()
