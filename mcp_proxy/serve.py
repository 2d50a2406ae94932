"""Run the server-mode app on gevent.pywsgi until SIGTERM or SIGINT.

Shutdown, in order: stop accepting connections, end every session (its streams finish and
its child gets stdin closed, then SIGTERM, then SIGKILL), wait for the children within the
stop timeout, then return so the process exits 0. The listener has TCP_NODELAY set, or every
keep-alive POST would wait ~40 ms for Nagle and delayed ACK.
"""

from __future__ import annotations

import logging
import signal
import socket

import gevent
from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer

from mcp_proxy.server import create_app
from mcp_proxy.settings import ServerSettings

logger = logging.getLogger(__name__)

_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n\r\n")


_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
_COALESCE_LIMIT = 1 << 16  # answers up to this size leave in one send with their head
ACCESS_LOG = logging.getLogger("mcp_proxy.access")


class Headers:
    """Request headers read straight off the connection.

    pywsgi's default goes through ``email.parser``, which was an eighth of the proxy's CPU per
    request; this keeps the small interface pywsgi uses (``get``, ``headers``, ``status``).
    """

    __slots__ = ("status", "headers", "_values")

    def __init__(self, rfile) -> None:
        self.status = ""
        self.headers: list[str] = []
        self._values: dict[str, str] = {}
        while True:
            line = rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            if len(self.headers) == _MAX_HEADERS:
                self.status = "Too many headers"
                return
            text = line.decode("latin-1")
            self.headers.append(text)
            name, colon, value = text.partition(":")
            if colon:
                self._values.setdefault(name.strip().lower(), value.strip())

    def get(self, name: str, default=None):
        return self._values.get(name.lower(), default)

    getheader = get

    @property
    def typeheader(self):
        return self._values.get("content-type")

    def __delitem__(self, name: str) -> None:
        name = name.lower()
        self._values.pop(name, None)
        self.headers = [h for h in self.headers if h.partition(":")[0].strip().lower() != name]


class Handler(WSGIHandler):
    """pywsgi's handler with a faster header parser, 431 for oversized headers, small answers
    sent in one piece with their head, and an access log that costs nothing unless DEBUG
    logging asks for it."""

    _held: bytearray | None = None

    def MessageClass(self, rfile, *args):  # noqa: N802 (pywsgi's name)
        return Headers(rfile)

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

    def _sendall(self, data) -> None:
        if self._held is not None:
            self._held += data
        else:
            super()._sendall(data)

    def _handle_client_error(self, ex):
        if getattr(getattr(self, "headers", None), "status", "") in (
                "Line too long", "Too many headers"):
            return ("431", _HEADERS_TOO_LARGE)
        return super()._handle_client_error(ex)

    def get_environ(self):
        environ = super().get_environ()
        environ["mcp_proxy.socket"] = self.socket  # streams watch it for a client that leaves
        return environ

    def log_request(self) -> None:
        if ACCESS_LOG.isEnabledFor(logging.DEBUG):
            super().log_request()


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def serve(settings: ServerSettings, pool_size: int = 10000) -> int:
    app = create_app(settings)
    registry = app.extensions["mcp_proxy"]
    sock = listen(settings.host, settings.port)
    access_log = LoggingLogAdapter(ACCESS_LOG, logging.DEBUG)
    server = WSGIServer(sock, app, spawn=Pool(pool_size), handler_class=Handler,
                        log=access_log, error_log=logging.getLogger("mcp_proxy.http"))
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    for name in settings.servers:
        base = f"http://{host}:{port}" + (f"/servers/{name}" if name else "")
        logger.info("Serving %s: SSE at %s/sse, Streamable HTTP at %s/mcp",
                    name or "the default server", base, base)
    logger.info("Status at http://%s:%d/status", host, port)

    stopping: list[gevent.Greenlet] = []

    def stop(signum: int) -> None:
        logger.info("Received %s; shutting down", signal.Signals(signum).name)
        server.close()  # stop accepting; serve_forever then waits for the open requests
        registry.close_all("proxy shutting down", settings.stop_timeout)

    def on_signal(signum: int) -> None:
        if not stopping:
            stopping.append(gevent.spawn(stop, signum))

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    server.serve_forever(stop_timeout=settings.stop_timeout)
    gevent.joinall(stopping)
    logger.info("Stopped")
    return 0
