"""The pywsgi handler of the CLI server, driven over a socket pair (no monkey-patching)."""

from __future__ import annotations

import gevent
from gevent import socket

from mcp_proxy.server.pywsgi_handler import _COALESCE_LIMIT, Handler, Server


class CountingSocket:
    """A socket that records each send, so a test can see how an answer was written."""

    def __init__(self, sock) -> None:
        self._wrapped = sock  # not ``_sock``: pywsgi reads that name on a socket it closes
        self.sends: list[bytes] = []

    def sendall(self, data) -> None:
        self.sends.append(bytes(data))
        self._wrapped.sendall(data)

    def send(self, data, *flags) -> int:
        sent = self._wrapped.send(data, *flags)
        self.sends.append(bytes(data[:sent]))
        return sent

    def __getattr__(self, name):
        return getattr(self._wrapped, name)


def serve_one(body: bytes) -> tuple[list[bytes], bytes]:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    ours, theirs = socket.socketpair()
    counting = CountingSocket(ours)
    handler = Handler(counting, ("127.0.0.1", 1), Server(("127.0.0.1", 0), app))
    received = bytearray()

    def read_all() -> None:
        while chunk := theirs.recv(1 << 20):
            received.extend(chunk)

    theirs.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reader = gevent.spawn(read_all)
    with gevent.Timeout(10):
        handler.handle()
        ours.close()
        reader.get()
    theirs.close()
    return counting.sends, bytes(received)


def test_small_answer_leaves_with_its_head_in_one_send():
    sends, received = serve_one(b"hello")
    assert len(sends) == 1
    assert sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and sends[0].endswith(b"\r\n\r\nhello")
    assert received == sends[0]


def test_large_answer_is_not_copied_into_the_head():
    body = b"x" * (_COALESCE_LIMIT + 1)
    sends, received = serve_one(body)
    assert len(sends) == 2 and sends[1] == body
    assert received.endswith(b"\r\n\r\n" + body)
