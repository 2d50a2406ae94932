"""Run the server-mode app on gevent.pywsgi until SIGTERM or SIGINT (the ``mcp-proxy`` command).

This module owns the process's life as a server: the listening socket, the signals, the order
of start-up and shutdown. It never builds the app (cli.py hands over ``create_app``; gunicorn
runs wsgi.py instead) and never parses HTTP (pywsgi_handler.py does).

Start-up, in order: take over SIGTERM and SIGINT, bind (a taken port starts nothing), build
the app, start accepting, and only then announce the URLs (tests and supervisors wait for
the "Status at" line).
Shutdown, in order: stop accepting connections and hang up the idle keep-alive ones, end
every session (its streams finish and its child gets stdin closed, then SIGTERM, then
SIGKILL), wait for the requests in progress and the children within the stop timeout, then
return so the process exits 0. The listener has TCP_NODELAY set, or every keep-alive POST
would wait ~40 ms for Nagle and delayed ACK.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections.abc import Callable

import gevent
from gevent.event import AsyncResult
from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter

from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.errors import ConfigError
from mcp_proxy.server.pywsgi_handler import ACCESS_LOG, Server

logger = logging.getLogger(__name__)


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


def serve(settings: ServerSettings, create_app: Callable[[ServerSettings], Callable],
          pool_size: int = 10000, signalled: list[int] | None = None) -> int:
    """Serve the app ``create_app(settings)`` builds until a signal; ``signalled`` holds those
    that came before we could handle them. The app is built once the port is ours."""
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
