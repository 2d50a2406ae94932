"""Run the server-mode app on gevent.pywsgi until SIGTERM or SIGINT.

Start-up, in order: take over SIGTERM and SIGINT, build the app, bind and start accepting,
and only then announce the URLs (tests and supervisors wait for the "Status at" line).
Shutdown, in order: stop accepting connections and hang up the idle keep-alive ones, end
every session (its streams finish and its child gets stdin closed, then SIGTERM, then
SIGKILL), wait for the requests in progress and the children within the stop timeout, then
return so the process exits 0. The listener has TCP_NODELAY set, or every keep-alive POST
would wait ~40 ms for Nagle and delayed ACK.
"""

from __future__ import annotations

import errno
import io
import logging
import signal
import socket
import time

import gevent
from gevent.event import AsyncResult
from gevent.pool import Pool
from gevent.pywsgi import (
    MAX_REQUEST_LINE,
    Input,
    LoggingLogAdapter,
    WSGIHandler,
    WSGIServer,
    format_date_time,
)

from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core.http1 import Headers, body_framing, request_line
from mcp_proxy.errors import BadHttpRequest, ConfigError
from mcp_proxy.server.app import create_app

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


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a ConfigError naming the address and what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        fix = ("stop what listens there, or give another --port (0 picks a free one)"
               if exc.errno == errno.EADDRINUSE else
               "give --port 1024 or above, or run with the right to bind it"
               if exc.errno == errno.EACCES else
               "give --host an address of this machine (127.0.0.1, 0.0.0.0, ::)")
        raise ConfigError(f"cannot listen on {shown}: {exc.strerror or exc}: {fix}") from None
    return sock


def serve(settings: ServerSettings, pool_size: int = 10000,
          signalled: list[int] | None = None) -> int:
    """Serve until a signal; ``signalled`` holds those that came before we could handle them."""
    stop_signal: AsyncResult = AsyncResult()

    def on_signal(signum: int) -> None:
        if not stop_signal.ready():
            stop_signal.set(signum)

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    for signum in signalled or ():
        on_signal(signum)

    sock = listen(settings.host, settings.port)  # first: a taken port starts nothing
    app = create_app(settings)
    registry = app.extensions["mcp_proxy"]
    server = Server(sock, app, spawn=Pool(pool_size), max_body=settings.max_body,
                    log=LoggingLogAdapter(ACCESS_LOG, logging.DEBUG),
                    error_log=logging.getLogger("mcp_proxy.http"))
    server.start()
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    for name in settings.servers:
        base = f"http://{host}:{port}" + (f"/servers/{name}" if name else "")
        logger.info("Serving %s: SSE at %s/sse, Streamable HTTP at %s/mcp",
                    name or "the default server", base, base)
    logger.info("Status at http://%s:%d/status", host, port)

    signum = stop_signal.get()
    logger.info("Received %s; shutting down", signal.Signals(signum).name)
    closing = gevent.spawn(registry.close_all, "proxy shutting down", settings.stop_timeout)
    server.stop(timeout=settings.stop_timeout)  # stop accepting, wait for open requests
    closing.join()
    logger.info("Stopped")
    return 0
