"""The request checks of server mode, which read the WSGI environ without Flask's request."""

from __future__ import annotations

import io

import pytest

from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.server.responses import accepts, is_json, read_message, too_large


@pytest.mark.parametrize(("accept", "expected"), [
    (None, (True, True)),
    ("", (True, True)),
    ("application/json, text/event-stream", (True, True)),
    ("*/*", (True, True)),
    ("application/*, text/*", (True, True)),
    ("application/json", (True, False)),
    ("text/event-stream", (False, True)),
    ("application/json;q=0, text/event-stream", (False, True)),
    ("*/*, text/event-stream;q=0", (True, False)),
    ("text/html, " * 40 + "application/json", (True, False)),  # too long to be cached
])
def test_accept_header(accept, expected):
    environ = {} if accept is None else {"HTTP_ACCEPT": accept}
    assert accepts(environ) == expected
    assert accepts(environ) == expected  # the cached answer is the same


@pytest.mark.parametrize(("content_type", "expected"), [
    ("application/json", True),
    ("Application/JSON; charset=utf-8", True),
    ("application/json-seq", False),
    ("text/plain", False),
    (None, False),
])
def test_content_type(content_type, expected):
    assert is_json({} if content_type is None else {"CONTENT_TYPE": content_type}) is expected


BODY = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


def environ_with(body: bytes, length: str | None, terminated: bool = False) -> dict:
    environ = {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": terminated}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    return environ


def test_body_with_length_is_read_whole():
    message = read_message(environ_with(BODY, str(len(BODY))), limit=1000)
    assert isinstance(message, Message) and message.method == "ping"


def test_chunked_body_is_read_to_its_end():
    message = read_message(environ_with(BODY, None, terminated=True), limit=1000)
    assert isinstance(message, Message) and message.id == 1


def test_declared_size_over_the_limit_is_refused_before_reading():
    environ = environ_with(BODY, "5000")
    assert too_large(environ, limit=1000).status_code == 413
    assert environ["wsgi.input"].tell() == 0
    assert too_large(environ_with(BODY, "not a number"), limit=1000) is None


def test_chunked_body_over_the_limit_is_refused():
    answer = read_message(environ_with(BODY * 100, None, terminated=True), limit=1000)
    assert answer.status_code == 413


def test_malformed_body_is_a_jsonrpc_parse_error():
    answer = read_message(environ_with(b"{nope", "5"), limit=1000)
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == -32700


@pytest.fixture
def guarded_app():
    from mcp_proxy.config.flag_settings import server_settings
    from mcp_proxy.config.options import build_parser
    from mcp_proxy.server.app import create_app

    args = ["--port", "0", "--allow-host", "example.com", "--", "true"]
    return create_app(server_settings(build_parser().parse_args(args)))


@pytest.mark.parametrize(("host", "origin", "status"), [
    ("127.0.0.1:8080", None, 200),
    ("example.com:80", "http://example.com", 200),  # the default port is not part of the name
    ("127.0.0.1:8080", "http://127.0.0.1:8080", 200),
    ("127.0.0.1:8080", "http://localhost:3000", 200),  # a loopback page
    ("127.0.0.1:8080", "https://evil.example", 403),
    ("evil.example", None, 421),
    ("EVIL.example:8080", None, 421),
])
def test_host_and_origin_guard(guarded_app, host, origin, status):
    headers = {"Host": host, **({"Origin": origin} if origin else {})}
    for _ in range(2):  # the second answer comes from the cached Host decision
        assert guarded_app.test_client().get("/status", headers=headers).status_code == status
