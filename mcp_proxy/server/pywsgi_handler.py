"""pywsgi's request handler and server, with our overrides of their internals: the one place
that relies on them.

This module owns how a connection's requests are read and answered on the wire: a strict
HTTP/1.1 parser (core/http1.py) in place of pywsgi's, the body read whole before the app runs
(a malformed one is a 400 here, not a 500 in the app), a small answer sent in one piece with
its head, the Date header formatted once a second, and the connections idle between two
requests, which closing the server hangs up. It never looks at what a request asks for.

The overrides use pywsgi's undocumented handler internals (``read_requestline``,
``read_request``, ``rfile``, ``Input``, ``_headers``, ``_write_with_headers``, ``_write``,
``_sendall``, ``_handle_client_error``, ``response_length``...). Why not the public way:
the stock handler's parser costs 79 us per POST where ours costs 16 us (bench/parse.py's head
and body; the same loop run on ``gevent.pywsgi.WSGIHandler`` for the stock figure; gevent
26.9, Python 3.11, best of 200 runs of 500 on a shared machine), against 46 to 77 us for the
app's own work on such a POST (url_adapter.py). The stock handler also sends a small answer's
head and body with two syscalls (two TCP segments under TCP_NODELAY, two wake-ups of the
client), and leaves a malformed chunked body to the app, which answered it 500. ``make
test-latest`` runs the suite on the newest gevent to catch a change in these internals.
"""

from __future__ import annotations

import io
import logging
import socket
import time

from gevent.pywsgi import MAX_REQUEST_LINE, Input, WSGIHandler, WSGIServer, format_date_time

from mcp_proxy.core.http1 import Headers, body_framing, request_line
from mcp_proxy.errors import BadHttpRequest

logger = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("mcp_proxy.access")
_COALESCE_LIMIT = 1 << 16  # answers up to this size leave in one send with their head


class Handler(WSGIHandler):
    """pywsgi's handler with a strict and faster request parser (http1.py), small answers
    sent in one piece with their head, and an access log that costs nothing unless DEBUG
    logging asks for it. Needs a ``Server``."""

    _held: bytearray | None = None
    _body: bytes | None = None  # the body, read whole before the app runs
    _input: Input | None = None

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # gone while we answered its bad request: nothing to tell
            pass

    def read_requestline(self) -> str:
        server = self.server
        if server.stopping:  # do not wait for another request
            return ""
        server.idle.add(self)
        try:
            line = self.rfile.readline(MAX_REQUEST_LINE)
            if line == b"\r\n":  # RFC 9112 2.2: skip an empty line before a request
                line = self.rfile.readline(MAX_REQUEST_LINE)
        finally:
            server.idle.discard(self)
        return line.decode("latin-1")

    def hang_up(self) -> None:
        """Close a connection idle between two requests; its handler then ends."""
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):  # already gone
            pass

    def read_request(self, raw_requestline: str) -> bool:
        self.requestline = raw_requestline.rstrip("\r\n")
        self._body = None
        self.command, self.path, self.request_version = request_line(raw_requestline)
        self.headers = headers = Headers(self.rfile)
        self.content_length, chunked = body_framing(headers, self.request_version)
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        if chunked or self.content_length and self.content_length <= self.server.max_body:
            self._read_body(chunked)
        return True

    def _read_body(self, chunked: bool) -> None:
        # Read before the app runs, so that a malformed or cut-short body is answered 400
        # here like a malformed head (in the app it was a 500 with a traceback, and a chunked
        # stream left mid-chunk). A chunked body past the limit gives the app limit + 1 bytes
        # to refuse, and pywsgi drains the rest after the answer.
        expect = self.headers.get("expect", "").lower() == "100-continue"
        self._input = Input(self.rfile, self.content_length, chunked_input=chunked,
                            socket=self.socket if expect else None)
        try:
            self._body = self._input.read(self.server.max_body + 1)
        except OSError as exc:  # pywsgi's chunk errors, the body cut short, or a reset
            reason = exc.strerror if isinstance(exc, ConnectionError) else exc.args[0]
            raise BadHttpRequest(f"malformed body ({reason})") from None
        except ValueError:  # pywsgi parses an empty chunk size as hex
            raise BadHttpRequest("malformed body (no chunk size)") from None

    def _headers(self):
        # pywsgi's re-splits each line; ours are split and checked already
        for name, value in self.headers.fields:
            if "_" not in name:  # as pywsgi: X_Forwarded_For must not pose as X-Forwarded-For
                key = name.upper().replace("-", "_")
                if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                    yield "HTTP_" + key, value

    def get_environ(self) -> dict:
        environ = super().get_environ()
        environ["mcp_proxy.socket"] = self.socket  # streams watch it for a client that leaves
        if self._body is not None:
            environ["wsgi.input"] = io.BytesIO(self._body)
            self.wsgi_input = self._input
            if len(self._body) <= self.server.max_body:
                environ["CONTENT_LENGTH"] = str(len(self._body))
        return environ

    def finalize_headers(self) -> None:
        if self.provided_date is None:  # pywsgi formats the date anew for every answer
            self.response_headers.append((b"Date", _http_date()))
            self.provided_date = True
        super().finalize_headers()

    def _write_with_headers(self, data) -> None:
        # pywsgi sends the head and the first body chunk with two syscalls (two TCP segments
        # under TCP_NODELAY, two wake-ups of the client); a small answer goes out in one
        if not data or len(data) > _COALESCE_LIMIT:
            super()._write_with_headers(data)
            return
        self._held = bytearray()
        try:
            super()._write_with_headers(data)
        finally:
            held, self._held = self._held, None
        self._sendall(held)

    def _write(self, data) -> None:
        # pywsgi frames a chunk by copying it into a bytearray: a big one goes out beside
        # its framing instead
        if self.response_use_chunked and len(data) > _COALESCE_LIMIT:
            self._sendall(b"%x\r\n" % len(data))
            self._sendall(data)
            self._sendall(b"\r\n")
        else:
            super()._write(data)

    def _sendall(self, data) -> None:
        if self._held is not None:
            self._held += data
        elif len(data) > _COALESCE_LIMIT:
            super()._sendall(data)
        else:
            # one send() is one syscall and nearly always takes it all; gevent's sendall
            # first asks the kernel for the socket's buffer size, for every chunk
            try:
                sent = self.socket.send(data)
            except OSError:
                super()._sendall(data)  # pywsgi's bookkeeping of a failed send, and the raise
                return
            if sent < len(data):
                super()._sendall(memoryview(data)[sent:])  # counts what it sends
            self.response_length += sent

    def _handle_client_error(self, ex):
        if isinstance(ex, BadHttpRequest):
            logger.info("Refused a request from %s: %s", self.client_address[0], ex)
            return str(ex.status), ex.answer()
        return super()._handle_client_error(ex)

    def log_request(self) -> None:
        if ACCESS_LOG.isEnabledFor(logging.DEBUG):
            super().log_request()


_date = [0, b""]  # the second it is for, the Date value


def _http_date() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[1] = format_date_time(now)
        _date[0] = now
    return _date[1]


class Server(WSGIServer):
    """pywsgi's server with our handler, the most of a body the handler reads ahead, and
    the connections idle between two requests, which closing the server hangs up."""

    handler_class = Handler

    def __init__(self, *args, max_body: int = 4 << 20, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_body = max_body
        self.idle: set[Handler] = set()
        self.stopping = False

    def close(self) -> None:
        self.stopping = True
        super().close()
        # a keep-alive client may never send another request: waiting for it would hold
        # the shutdown for the whole stop timeout
        for handler in list(self.idle):
            handler.hang_up()
