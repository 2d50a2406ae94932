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


class Handler(WSGIHandler):
    """pywsgi's handler, answering over-long or too many header lines with 431, not 400."""

    def _handle_client_error(self, ex):
        status = getattr(getattr(self, "headers", None), "status", "")
        if status == "Line too long" or "headers" in str(ex).lower() and "more than" in str(ex):
            return ("431", _HEADERS_TOO_LARGE)
        return super()._handle_client_error(ex)


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
    access_log = LoggingLogAdapter(logging.getLogger("mcp_proxy.access"), logging.DEBUG)
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
