"""Client mode's POSTs on the fast path (upstream/poster.py, upstream/raw_response.py): the headers
they carry, every framing of an answer, and the same errors as through requests.

The remote is a scripted Streamable HTTP server on 127.0.0.1 that records each POST and
answers ``tools/call`` as the tool's name says (chunked, close-delimited, a redirect, a cut
connection, ...). The unit tests at the end feed ``RawResponse`` canned bytes over a real socket.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.auth import HTTPBasicAuth, HTTPDigestAuth
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from conftest import Scripted, rpc
from mcp_proxy.errors import BrokenResponse
from mcp_proxy.upstream.poster import Poster
from mcp_proxy.upstream.raw_response import RawResponse

INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "serverInfo": {"name": "scripted", "version": "0"}}


class Remote(Scripted):
    """Streamable HTTP; ``server.posts`` records (method, headers, client port) per POST."""

    def do_GET(self) -> None:
        self.reply(405)
        self.server.gets.release()

    def do_POST(self) -> None:
        message = json.loads(self.body())
        method = message.get("method") or "answer"
        self.server.posts.append((method, dict(self.headers), self.client_address[1]))
        if "id" not in message:
            return self.reply(202)
        if method == "initialize":
            cookie = {"Set_Cookie": "sticky=b2; Path=/"} if self.server.cookie else {}
            return self.reply_result(message["id"], INIT, Mcp_Session_Id="s-1", **cookie)
        name = (message.get("params") or {}).get("name", "")
        answer = json.dumps({"jsonrpc": "2.0", "id": message["id"],
                             "result": {"tool": name, "path": self.path}}).encode()
        getattr(self, "answer_" + name.replace("-", "_"), self.answer_plain)(answer)

    def answer_plain(self, answer: bytes) -> None:
        self.reply(200, answer)

    def _raw(self, data: bytes, close: bool = False) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = close

    def answer_chunked(self, answer: bytes) -> None:
        half = len(answer) // 2
        self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n" + b"%x;ext=1\r\n%s\r\n" % (half, answer[:half])
                  + b"%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(answer) - half,
                                                               answer[half:]))

    def answer_events(self, answer: bytes) -> None:
        progress = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{' \
                   b'"progressToken":1,"progress":1}}'
        events = [b"event: message\ndata: " + progress + b"\n\n", b": ping\n\n",
                  b"event: message\ndata: " + answer + b"\n\n"]
        self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
                  + b"0\r\n\r\n")

    def answer_until_close(self, answer: bytes) -> None:
        self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close"
                  b"\r\n\r\n" + answer, close=True)

    def answer_continue(self, answer: bytes) -> None:
        self._raw(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.reply(200, answer)

    def answer_redirect(self, answer: bytes) -> None:
        if self.path == "/mcp":
            return self.reply(307, b"", "text/plain", Location="/moved")
        self.reply(200, answer)

    def answer_then_drop(self, answer: bytes) -> None:
        self.reply(200, answer)  # kept-alive as far as the headers say, then closed
        self.close_connection = True

    def answer_cut(self, answer: bytes) -> None:
        self._raw(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)

    def answer_garbage(self, answer: bytes) -> None:
        self._raw(b"SSH-2.0-OpenSSH\r\n\r\n", close=True)

    def answer_refused(self, answer: bytes) -> None:
        self.reply(401, b"", "text/plain", WWW_Authenticate="Bearer")

    def answer_gone(self, answer: bytes) -> None:
        self.reply(404, b"no such session", "text/plain")

    def answer_ambiguous(self, answer: bytes) -> None:
        # a second "id" (spelled with an escape) that a last-wins parser would take
        self.reply(200, answer[:-1] + b',"\\u0069d":99}')

    def answer_ambiguous_event(self, answer: bytes) -> None:
        event = b"event: message\ndata: " + answer[:-1] + b',"result":{}}\n\n'
        self.reply(200, event, "text/event-stream")

    def answer_slow(self, answer: bytes) -> None:
        time.sleep(2)
        self.reply(200, answer)


@pytest.fixture
def remote(scripted):
    server, base = scripted(Remote, posts=[], cookie=False,
                            gets=threading.Semaphore(0))
    return server, base + "/mcp"


def call(client, request_id: int, tool: str) -> dict:
    try:
        return client.call(rpc("tools/call", request_id, name=tool, arguments={}))
    except queue.Empty:
        pytest.fail(f"no answer to {tool} within 15 s; the client said:\n{client.stderr()}")


def test_fast_path_carries_user_headers_and_token_on_one_connection(remote, clients):
    server, url = remote
    client = clients("--debug", "--transport", "streamablehttp", "-H", "X-Api-Key", "k3y",
                     url, env={"API_ACCESS_TOKEN": "t0ken"})
    client.handshake()
    assert call(client, 1, "plain")["result"] == {"tool": "plain", "path": "/mcp"}
    assert client.close() == 0
    assert "POSTs take the fast path" in client.stderr()
    methods = [method for method, _, _ in server.posts]
    assert methods == ["initialize", "notifications/initialized", "tools/call"]
    for _, headers, _ in server.posts:
        assert headers["X-Api-Key"] == "k3y"
        assert headers["Authorization"] == "Bearer t0ken"
        assert headers["Content-Type"] == "application/json"
    assert server.posts[2][1]["Mcp-Session-Id"] == "s-1"
    assert server.posts[2][1]["MCP-Protocol-Version"] == "2025-06-18"
    assert len({port for _, _, port in server.posts}) == 1  # kept alive


def test_a_cookie_the_remote_sets_is_sent_back(remote, clients):
    """A load balancer's sticky-session cookie: requests keeps it in the session's jar and
    sends it; the fast path puts it there too, and leaves the POSTs after it to requests."""
    server, url = remote
    server.cookie = True
    client = clients("--transport", "streamablehttp", url)
    client.handshake()
    assert call(client, 1, "plain")["result"]["tool"] == "plain"
    assert client.close() == 0
    assert "Cookie" not in server.posts[0][1]
    assert [headers.get("Cookie") for _, headers, _ in server.posts[1:]] == ["sticky=b2"] * 2


def test_digest_takes_requests(remote, clients):
    server, url = remote  # it never challenges, so requests sends no Authorization at all
    client = clients("--debug", "--transport", "streamablehttp", "--username", "ann",
                     "--password", "pw", "--digest", url)
    client.handshake()
    assert call(client, 1, "plain")["result"]["tool"] == "plain"
    assert client.close() == 0
    assert "POSTs take requests (auth HTTPDigestAuth)" in client.stderr()
    assert all("Authorization" not in headers for _, headers, _ in server.posts)


def test_every_framing_of_an_answer(remote, clients):
    server, url = remote
    client = clients("--debug", "--transport", "streamablehttp", url)
    client.handshake()
    for n, tool in enumerate(["chunked", "until-close", "continue", "then-drop", "plain",
                              "redirect", "plain"], start=1):
        path = "/moved" if tool == "redirect" else "/mcp"
        assert call(client, n, tool) == {"jsonrpc": "2.0", "id": n,
                                         "result": {"tool": tool, "path": path}}, tool
    progress = call(client, 10, "events")
    assert progress["method"] == "notifications/progress"
    assert client.recv() == {"jsonrpc": "2.0", "id": 10,
                             "result": {"tool": "events", "path": "/mcp"}}
    assert client.close() == 0
    assert "POST answered 307: sent again through requests" in client.stderr()


def test_2026_requests_take_the_fast_path_too(remote, clients):
    """A 2026-07-28 client's requests (and so the bridge's) are POSTed as a session's are:
    every framing read, a redirect handed to requests, one kept-alive connection."""
    server, url = remote  # the remote speaks 2026-07-28 (said, so no server/discover probe)
    client = clients("--debug", "--transport", "streamablehttp", "--protocol-era", "modern", url)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"}}
    for n, tool in enumerate(["plain", "chunked", "continue", "plain", "redirect"], start=1):
        answer = client.call(rpc("tools/call", n, name=tool, arguments={}, _meta=meta))
        path = "/moved" if tool == "redirect" else "/mcp"
        assert answer == {"jsonrpc": "2.0", "id": n, "result": {"tool": tool, "path": path}}
    assert client.close() == 0
    assert "POST answered 307: sent again through requests" in client.stderr()
    posts = [(headers, port) for method, headers, port in server.posts if method == "tools/call"]
    assert all(h["MCP-Protocol-Version"] == "2026-07-28" and "Mcp-Session-Id" not in h
               for h, _ in posts)
    assert len({port for _, port in posts[:4]}) == 1  # kept alive until the redirect


@pytest.mark.parametrize("tool, error", [
    ("ambiguous", "the remote's answer could not be relayed: it is not a JSON-RPC answer"),
    ("ambiguous-event", "the server's answer was refused: Invalid Request: duplicate member"),
])
def test_an_answer_the_proxy_refuses_is_an_error_not_a_wait(remote, clients, tool, error):
    server, url = remote
    client = clients("--transport", "streamablehttp", url)
    client.handshake()
    failed = call(client, 1, tool)
    assert failed["id"] == 1 and failed["error"]["code"] == -32603, failed
    assert failed["error"]["message"].startswith(error), failed
    assert call(client, 2, "plain")["result"]["tool"] == "plain"  # and the next one works
    assert client.close() == 0
    assert "skipped a message that is not JSON-RPC" in client.stderr()


@pytest.mark.parametrize("tool, error", [
    ("cut", "POST failed: ConnectionError"),
    ("garbage", "POST failed: ConnectionError"),
    ("refused", "the remote refused our credentials (401)"),
    ("gone", "the remote no longer knows our session (404)"),
    ("slow", "POST failed: ReadTimeout"),
])
def test_errors_are_those_of_requests(remote, clients, tool, error):
    server, url = remote
    # a static token: the session has no auth of its own that could react to the 401
    client = clients("--transport", "streamablehttp", "--read-timeout", "1", url,
                     env={"API_ACCESS_TOKEN": "t0ken"})
    client.handshake()
    failed = call(client, 1, tool)
    assert failed["id"] == 1 and error in failed["error"]["message"], failed
    assert call(client, 2, "plain")["result"]["tool"] == "plain"  # and the next one works
    assert client.close() == 0


# --- Answer on its own, over a real socket -------------------------------------------------

def answer_to(data: bytes) -> tuple[RawResponse, list]:
    """An Answer read from a socket whose peer sent ``data`` and closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    sock = socket.create_connection(listener.getsockname(), timeout=5)
    peer, _ = listener.accept()
    listener.close()
    threading.Thread(target=lambda: (peer.sendall(data), peer.close()), daemon=True).start()
    released: list = []
    try:
        return RawResponse(sock, released.append), released
    except Exception:
        sock.close()
        raise


def test_answer_framings_and_reuse():
    answer, released = answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nA: 1\r\nA: 2\r\n"
                                 b"\r\nhello")
    assert (answer.status_code, answer.reason, answer.headers["a"]) == (200, "OK", "1, 2")
    assert answer.raw.read1(3) == b"hel" and answer.content == b"lo"
    answer.close()
    assert released == [True]  # whole and kept alive: reusable

    answer, released = answer_to(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert answer.content == b""
    answer.close()
    assert released == [True]

    answer, released = answer_to(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert answer.content == b"ok"
    answer.close()
    assert released == [False]  # HTTP/1.0: not kept alive

    answer, released = answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf")
    assert answer.raw.read1() == b"half"
    answer.close()  # closed before the end: never reused
    assert released == [False]


def test_broken_answers():
    for data in (b"", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"):
        with pytest.raises(BrokenResponse):
            answer_to(data)
    answer, released = answer_to(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"zz\r\n")
    with pytest.raises(BrokenResponse):
        answer.content  # noqa: B018
    answer.close()
    assert released == [False]
    answer, released = answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(BrokenResponse):
        answer.content  # noqa: B018


def requests_text(content_type: str | None, body: bytes) -> str:
    """What ``requests.Response.text`` reads of this body (its adapter sets the encoding)."""
    response = requests.Response()
    response._content, response.status_code = body, 200
    response.headers = CaseInsensitiveDict({"Content-Type": content_type} if content_type else {})
    response.encoding = get_encoding_from_headers(response.headers)
    return response.text


CONTENT_TYPES = [None, "text/plain", "text/plain; charset=utf-8", "application/json",
                 "text/html; charset=latin-1", "text/plain; charset=no-such-codec",
                 'text/plain; charset="utf-16"', "application/problem+json"]


@settings(max_examples=120, deadline=None, database=None)
@given(content_type=st.sampled_from(CONTENT_TYPES),
       body=st.one_of(st.binary(max_size=200),
                      st.text(max_size=100).map(lambda t: t.encode("utf-8")),
                      st.text(max_size=100).map(lambda t: t.encode("utf-16"))))
def test_answer_text_is_what_requests_reads(content_type, body):
    head = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n" % len(body)
    if content_type:
        head += b"Content-Type: " + content_type.encode() + b"\r\n"
    answer, _ = answer_to(head + b"\r\n" + body)
    try:
        assert answer.text == requests_text(content_type, body)
    finally:
        answer.close()


def test_refused_connection_is_a_connection_error(remote, clients):
    server, url = remote
    client = clients("--transport", "streamablehttp", url, env={"API_ACCESS_TOKEN": "t0ken"})
    client.handshake()
    assert call(client, 1, "until-close")["result"]["tool"] == "until-close"  # no idle one left
    # the start-up probe and the GET stream were answered (405: no stream) before: a GET
    # refused would start recovery instead
    assert server.gets.acquire(timeout=10) and server.gets.acquire(timeout=10)
    server.shutdown()
    server.server_close()
    failed = call(client, 2, "plain")
    assert failed["id"] == 2 and "POST failed: ConnectionError" in failed["error"]["message"]
    assert client.close() == 0


def test_what_takes_the_fast_path():
    session = requests.Session()
    assert Poster(session, "http://127.0.0.1:9/mcp", (1, 1)).fast
    assert Poster(session, "http://127.0.0.1:9/a b?x=1", (1, 1)).target == "/a%20b?x=1"
    assert not Poster(session, "http://ann:pw@127.0.0.1:9/mcp", (1, 1)).fast  # Basic, to requests
    session.auth = HTTPBasicAuth("ann", "pw")
    assert Poster(session, "http://127.0.0.1:9/mcp", (1, 1)).fast
    session.auth = HTTPDigestAuth("ann", "pw")
    assert not Poster(session, "http://127.0.0.1:9/mcp", (1, 1)).fast
    session.auth = None
    session.proxies["http"] = "http://127.0.0.1:3128"
    assert not Poster(session, "http://127.0.0.1:9/mcp", (1, 1)).fast
