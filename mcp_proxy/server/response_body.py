"""A streaming response's body: it notices a client that left, and cleans up once.

This module owns the response around a stream's events (streams.py owns the queue). A
:class:`Body` notices at once a client that closed or reset its connection (see
:func:`_watch`), remembers when a chunk was handed to a client that has not taken it (stall
detection), and runs its cleanup exactly once, however the response ends, even if the
server never started iterating it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import gevent

from mcp_proxy.core import greenlets

if TYPE_CHECKING:
    from mcp_proxy.server.streams import Stream

logger = logging.getLogger(__name__)

# where the client's socket is in the WSGI environ: ours, gunicorn's gevent worker,
# gunicorn's gevent_pywsgi worker
SOCKET_KEYS = ("mcp_proxy.socket", "gunicorn.socket", "gunicorn.sock")


def client_socket(environ: dict) -> socket.socket | None:
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None:
            return sock
    return None


def _watch(sock: socket.socket, on_gone: Callable[[], None]):
    """Watch the client's socket without a greenlet: when it turns readable (the loop calls
    back), peek in a greenlet; at EOF or a reset, call ``on_gone``.

    A client that sends more instead (a pipelined request) cannot be told from one that
    stays: the watch ends and the keepalive pings detect it as before.
    """
    watcher = gevent.get_hub().loop.io(sock.fileno(), 1)

    def peek() -> None:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return
        except BlockingIOError:
            watcher.start(readable)  # woken for nothing: watch on
            return
        except OSError:
            pass
        on_gone()

    def readable() -> None:
        watcher.stop()
        greenlets.spawn(peek, name="disconnect check")

    watcher.start(readable)
    return watcher


class Body:
    """A streaming response body around ``chunks``: see the module docstring.

    Of ``stream`` it uses only ``writing_since``, ``abort`` and ``session.draining`` (what the
    reaper's stall check reads), so a forwarded call (scaleout/forwarder.py) stands in for one.
    """

    def __init__(self, chunks: Iterator[bytes], environ: dict, stream: Stream | None,
                 on_gone: Callable[[], None], cleanup: Callable[[], None]) -> None:
        self._chunks = chunks
        self._stream = stream
        self._cleanup: Callable[[], None] | None = cleanup
        self._watcher = None
        # the owner's set, kept: the stream may be disowned (its owner closed) before we end
        self._draining = stream.session.draining if stream is not None else None
        if stream is not None:
            self._draining.add(stream)
        sock = client_socket(environ)
        if sock is not None:
            self._watcher = _watch(sock, on_gone)
            if stream is not None:
                stream.abort = lambda: _shutdown(sock)
        elif "mcp_proxy.on_gone" in environ:  # forwarded: the receiving worker watches
            environ["mcp_proxy.on_gone"].append(on_gone)

    def __iter__(self) -> Iterator[bytes]:
        stream = self._stream
        if stream is None:
            yield from self._chunks
            return
        for chunk in self._chunks:  # the server resumes us once the client took the chunk
            stream.writing_since = time.monotonic()
            yield chunk
            stream.writing_since = None

    def close(self) -> None:
        """Called by the WSGI server however the response ended: stop watching, clean up."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._stream is not None:
            self._stream.writing_since = None
            self._draining.discard(self._stream)
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
