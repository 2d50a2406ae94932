#!/usr/bin/env python3
"""CPU of parsing one typical POST's request line and headers in the CLI's pywsgi handler.

    python bench/parse.py            # the mcp_proxy on sys.path (PYTHONPATH=... for another)

In process, no sockets: the handler's ``read_request`` and ``get_environ`` on the head the
official Python SDK (httpx) sends for a tool call, and reading its body from ``wsgi.input``
as the app does. Prints the best of many runs, in µs.
"""

from __future__ import annotations

import io
import sys
import timeit

from gevent.pywsgi import WSGIServer

from mcp_proxy.server.pywsgi_handler import Handler

HEAD = (b"Host: 127.0.0.1:8080\r\nAccept: application/json, text/event-stream\r\n"
        b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
        b"User-Agent: python-httpx/0.28.1\r\nContent-Type: application/json\r\n"
        b"mcp-session-id: 5f1c0a9e3b7d4e2a8c6f0b1d2e3a4b5c\r\n"
        b"mcp-protocol-version: 2025-06-18\r\nContent-Length: 128\r\n\r\n")
BODY = (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo",'
        b'"arguments":{"text":"hello, world, hello, world, hello"}}}')
LINE = "POST /mcp HTTP/1.1\r\n"


def main() -> None:
    server = WSGIServer(("127.0.0.1", 0), lambda environ, start_response: [])
    server.max_body, server.idle, server.stopping = 4 << 20, set(), False
    handler = Handler(None, ("127.0.0.1", 1), server, rfile=io.BytesIO())

    def parse() -> None:
        handler.rfile = io.BytesIO(HEAD + BODY)
        handler.read_request(LINE)
        environ = handler.get_environ()
        assert len(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))) == len(BODY)

    number = 500  # many short runs: the best of them is the least disturbed by other load
    best = min(timeit.repeat(parse, number=number, repeat=400)) / number
    where = sys.modules["mcp_proxy"].__file__
    print(f"{where}: {best * 1e6:.2f} µs per POST (head parsed, body read)")


if __name__ == "__main__":
    main()
