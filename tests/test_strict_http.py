"""Strict HTTP/1.1 parsing (RFC 9112) of the CLI server, over raw sockets: each malformed
request gets an answer with ``Connection: close`` and the server then closes; good ones work."""

from __future__ import annotations

import http.client
import json
import socket
import struct
from urllib.parse import urlsplit

import pytest

from conftest import INIT_PARAMS, RAW_SERVER, STREAM_HEADERS, ProxyProcess, rpc

LIMIT = 4096  # the proxy's --max-body-size here


@pytest.fixture(scope="module")
def proxy():
    proxy = ProxyProcess("--max-body-size", str(LIMIT), "--", *RAW_SERVER).started()
    yield proxy
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.stderr(), proxy.stderr()


def address(proxy: ProxyProcess) -> tuple[str, int]:
    url = urlsplit(proxy.base)
    return url.hostname, url.port


def exchange(proxy: ProxyProcess, data: bytes, half_close: bool = False) -> tuple[str, bytes]:
    """Send raw bytes; read until the server closes (bounded); return (head, body)."""
    with socket.create_connection(address(proxy), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):  # a timeout fails the test: the server must close
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def assert_refused(proxy: ProxyProcess, data: bytes, status: int = 400, reason: str = "",
                   half_close: bool = False) -> None:
    head, body = exchange(proxy, data, half_close)
    lines = head.split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), head
    assert "connection: close" in [line.lower() for line in lines[1:]], head
    assert reason in body.decode(), body


POST = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
GET = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"


BAD_HEADS = [
    (GET + "Accept : */*\r\n\r\n", "whitespace between a header name and its colon"),
    (GET + "Accept\t: */*\r\n\r\n", "whitespace between a header name and its colon"),
    (GET + "Accept */*\r\n\r\n", "without a colon"),
    (GET + "X-A: a\x00b\r\n\r\n", "control character in a header value"),
    (GET + "X-A: a\x01b\r\n\r\n", "control character in a header value"),
    (GET + "X-A: a\rb\r\n\r\n", "bare CR or LF"),
    (GET + "X-A: a\nX-B: b\r\n\r\n", "bare CR or LF"),
    (GET + "X-A: b\n\n", "bare CR or LF"),
    (GET + "X\x00A: b\r\n\r\n", "invalid character in a header name"),
    (GET + "X(A): b\r\n\r\n", "invalid character in a header name"),
    (GET + "X A: b\r\n\r\n", "invalid character in a header name"),
    (GET + ": b\r\n\r\n", "invalid character in a header name"),
    (GET + "X-A: a\r\n  folded\r\n\r\n", "obsolete line folding"),
    (GET + "X-A: a\r\n\tfolded\r\n\r\n", "obsolete line folding"),
    ("GET /status HTTP/1.1\r\nAccept: */*\r\n\r\n", "without a Host header"),
    (GET + "Host: 127.0.0.1\r\n\r\n", "more than one host header"),
    (POST + "Content-Length: 5x\r\n\r\nhello", "Content-Length that is not a number"),
    (POST + "Content-Length: +5\r\n\r\nhello", "Content-Length that is not a number"),
    (POST + "Content-Length: -1\r\n\r\n", "Content-Length that is not a number"),
    (POST + "Content-Length: 5, 5\r\n\r\nhello", "Content-Length that is not a number"),
    (POST + "Content-Length: \u00b2\r\n\r\nhe", "Content-Length that is not a number"),
    (POST + "Content-Length: " + "9" * 19 + "\r\n\r\n", "Content-Length that is not a number"),
    (POST + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     "more than one content-length header"),
    (POST + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
     "more than one content-length header"),
    (POST + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "both Transfer-Encoding and Content-Length"),
    (POST + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "both Transfer-Encoding and Content-Length"),
    (POST + "Transfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding other than chunked"),
    (POST + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     "Transfer-Encoding other than chunked"),
    (POST + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "more than one transfer-encoding header"),
    (POST.replace("HTTP/1.1", "HTTP/1.0") + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "Transfer-Encoding other than chunked"),
]


@pytest.mark.parametrize("head, reason", BAD_HEADS, ids=[reason for _, reason in BAD_HEADS])
def test_malformed_head_is_refused(proxy, head, reason):
    assert_refused(proxy, head.encode("latin-1"), reason=reason)


@pytest.mark.parametrize("line", [
    "GET\r\n", "GET /status\r\n", "GET /status HTTP/1.x\r\n", "GET /status FOO/1.1\r\n",
    "GET /status HTTP/2.0\r\n", "GET  /status HTTP/1.1\r\n", "GET /status HTTP/1.1 \r\n",
    "GET /status\tHTTP/1.1\r\n", "G(T /status HTTP/1.1\r\n", "GET /st\x00tus HTTP/1.1\r\n",
    "GET /status HTTP/1.1\n",
])
def test_malformed_request_line_is_refused(proxy, line):
    assert_refused(proxy, (line + "Host: 127.0.0.1\r\n\r\n").encode("latin-1"),
                   reason="malformed request line")


CHUNKED = POST + "Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("body, reason", [
    ("zz\r\nhello\r\n0\r\n\r\n", "Non-hex data"),
    ("1" * 17 + "\r\nhello\r\n0\r\n\r\n", "Chunk-size too large"),
    ("5\r\nhelloXX\r\n0\r\n\r\n", "didn't end in CRLF"),
    ("5\rXhello\r\n0\r\n\r\n", "didn't end in LF"),
    ("5;ext\nhello\r\n0\r\n\r\n", "malformed body"),
    ("\r\n", "malformed body"),
    ("0\r\nX(A): b\r\n\r\n", "malformed body"),
])
def test_malformed_chunked_body_is_refused(proxy, body, reason):
    assert_refused(proxy, (CHUNKED + body).encode(), reason=reason, half_close=True)


def test_body_cut_short_is_refused(proxy):
    assert_refused(proxy, (CHUNKED + "a\r\nhello").encode(), reason="malformed body",
                   half_close=True)
    assert_refused(proxy, (POST + "Content-Length: 100\r\n\r\n{}").encode(),
                   reason="malformed body", half_close=True)


def test_connection_ending_inside_the_head_is_answered(proxy):
    assert_refused(proxy, (GET + "Accept: */*\r\n").encode(), half_close=True,
                   reason="the connection ended inside the headers")


def test_oversized_heads_keep_their_status(proxy):
    assert_refused(proxy, (GET + "X-A: b\r\n" * 101 + "\r\n").encode(), 431, "too many headers")
    assert_refused(proxy, (GET + "X-A: " + "b" * 70000 + "\r\n\r\n").encode(), 431,
                   "header line too long")
    head, _ = exchange(proxy, ("GET /" + "a" * 9000 + " HTTP/1.1\r\n\r\n").encode())
    assert head.startswith("HTTP/1.1 414 ") and "Connection: close" in head


def initialize_body() -> bytes:
    return json.dumps(rpc("initialize", 1, **INIT_PARAMS)).encode()


def chunks(data: bytes, size: int = 7):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_chunked_post_and_keep_alive_still_work(proxy):
    host, port = address(proxy)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/mcp", body=chunks(initialize_body()), encode_chunked=True,
                 headers={**STREAM_HEADERS, "Transfer-Encoding": "chunked"})
    answer = conn.getresponse()
    text = answer.read().decode()
    assert answer.status == 200, text
    assert answer.getheader("Mcp-Session-Id")
    assert '"id": 1' in text or '"id":1' in text
    first = conn.sock
    for _ in range(3):  # the same connection serves the next requests
        conn.request("GET", "/status")
        status = conn.getresponse()
        assert status.status == 200 and json.loads(status.read())
        assert conn.sock is first
    conn.close()


def test_chunked_post_with_expect_continue_and_trailer(proxy):
    body = initialize_body()
    data = (POST + "Accept: application/json, text/event-stream\r\nExpect: 100-continue\r\n"
            "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    data += b"%x;name=value\r\n" % len(body) + body + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    head, answer = exchange(proxy, data)
    assert head == "HTTP/1.1 100 Continue"
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"result"' in answer


def test_chunked_body_over_the_limit_is_413_and_the_connection_lives(proxy):
    host, port = address(proxy)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    big = json.dumps(rpc("ping", 1, pad="x" * (3 * LIMIT))).encode()
    conn.request("POST", "/mcp", body=chunks(big, 1000), encode_chunked=True,
                 headers={**STREAM_HEADERS, "Transfer-Encoding": "chunked"})
    answer = conn.getresponse()
    assert answer.status == 413, answer.read()
    answer.read()
    conn.request("GET", "/status")
    assert conn.getresponse().status == 200
    conn.close()


def test_empty_line_before_a_request_is_skipped(proxy):
    head, _ = exchange(proxy, ("\r\n" + GET + "Connection: close\r\n\r\n").encode())
    assert head.startswith("HTTP/1.1 200 "), head


def test_client_gone_before_its_answer_leaves_no_traceback(proxy):
    for data in ((GET + "X-A: b\r\n" * 101 + "\r\n").encode(),
                 (POST + "Content-Length: 1000\r\n\r\n{").encode()):
        for _ in range(5):
            sock = socket.create_connection(address(proxy), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(data)
            sock.close()  # a reset, not a FIN
    proxy.expect(r"malformed body \(Connection reset by peer\)")
    head, _ = exchange(proxy, (GET + "Connection: close\r\n\r\n").encode())
    assert head.startswith("HTTP/1.1 200 "), head
    assert "Traceback" not in proxy.stderr(), proxy.stderr()
