"""What a server shows while it starts: its stderr's last lines, and a watch on ``initialize``.

A server run through ``uvx`` or ``npx`` may spend its first minute fetching packages, and
behind a corporate proxy or TLS inspection it can retry for ever: all our log said was
"started npx". So a child's stderr passes through :class:`StderrTail` (on to ours, a whole
line at a time, as the server wrote it; with ``--log-format json``, each line as a JSON log
line of the logger ``mcp_proxy.server_stderr``) which keeps its last lines, and :class:`StartWatch`
logs a WARNING with them when the server has not answered its ``initialize`` after
``START_WARNING`` seconds, and again, with what to check, when ``START_TIMEOUT`` passes and
the server is stopped (its client then gets an error, not a wait without end).

``MCP_PROXY_START_WARNING`` and ``MCP_PROXY_START_TIMEOUT`` (seconds) are internal knobs for
the tests, which must not wait a minute; they are not options for users.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

import gevent
from gevent.event import Event

from mcp_proxy.config.settings import NETWORK_ENV_KEYS, ServerSpec
from mcp_proxy.core import greenlets
from mcp_proxy.core.log_format import JsonFormatter

logger = logging.getLogger(__name__)
stderr_log = logging.getLogger("mcp_proxy.server_stderr")  # a server's own lines, as JSON

START_WARNING = float(os.environ.get("MCP_PROXY_START_WARNING", "10"))
# as long as a shared child's initialize may take (multiplexer.START_TIMEOUT)
START_TIMEOUT = float(os.environ.get("MCP_PROXY_START_TIMEOUT", "60"))
TAIL_LINES = 10
_LINE_CAP = 4096  # bytes of one stderr line passed on at a time, and kept


class StderrTail:
    """Pass a child's stderr on to ours, line by line, and keep its last lines.

    It reads in an event-loop callback, not a greenlet: a greenlet per child cost another
    16 kB for each session.
    """

    def __init__(self, pipe, name: str = "") -> None:
        self.name = name  # the child's, on its lines as JSON
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._pipe = pipe
        self._rest = b""
        self._forward = True
        os.set_blocking(pipe.fileno(), False)
        self._watcher = gevent.get_hub().loop.io(pipe.fileno(), 1)
        self._watcher.start(self._read)

    def _read(self) -> None:
        """One read a wake-up: a server that writes without pause must not hold the loop."""
        try:
            chunk = os.read(self._pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        try:
            if chunk:
                self._split(chunk)
                return
        except Exception:  # noqa: BLE001 - never raise into the event loop
            logger.exception("reading a server's stderr failed")
        self.close()

    def _split(self, chunk: bytes) -> None:
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        if len(self._rest) >= _LINE_CAP:  # a line without end: pass on what came so far
            lines.append(self._rest)
            self._rest = b""
        self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        """Keep the last lines, and write them on to our stderr."""
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.lines.append(text)
        if self._forward and lines and JsonFormatter.active:
            self._log(lines)
        elif self._forward and lines:
            data = memoryview(b"\n".join(lines) + b"\n")
            try:
                while data:  # a whole line at a time, as a log record is written
                    data = data[os.write(2, data):]
            except OSError:  # our stderr is gone (or will not take more): keep the tail
                self._forward = False

    def _log(self, lines: list[bytes]) -> None:
        """With ``--log-format json``, each line is a log line of its own (at every level:
        as text, a server's stderr is never held back either)."""
        for line in lines:
            stderr_log.handle(stderr_log.makeRecord(
                stderr_log.name, logging.INFO, __file__, 0,
                line.decode("utf-8", "replace").rstrip("\r"), None, None,
                extra={"fields": {"child": self.name}}))

    def close(self) -> None:
        """Take what is left and stop reading (a helper of the server may hold the pipe)."""
        if self._pipe.closed:
            return
        self._watcher.close()
        for _ in range(16):  # what a stopped server left in the pipe, not a helper's stream
            try:
                chunk = os.read(self._pipe.fileno(), 65536)
            except OSError:
                break
            if not chunk:
                break
            self._split(chunk)
        if self._rest:
            self._write([self._rest])
            self._rest = b""
        self._pipe.close()

    def text(self) -> str:
        """The last lines, for a log record (indented), or a note that there are none."""
        if not self.lines:
            return "it has written nothing to stderr"
        return "the last lines of its stderr:\n" + "\n".join(f"  | {line}"
                                                               for line in self.lines)


def hint(spec: ServerSpec) -> str:
    """What to check when a server does not start: the environment it was given."""
    if spec.pass_environment:
        return ("It got our whole environment (--pass-environment): if it fetches packages "
                "(uvx, npx), check HTTP_PROXY, HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE and "
                "NODE_EXTRA_CA_CERTS there.")
    if not spec.pass_network:
        return ("It got none of the network variables (--no-pass-network): if it fetches "
                "packages (uvx, npx) through a proxy or TLS inspection, drop that flag.")
    env = spec.child_env()
    given = [key for key in NETWORK_ENV_KEYS if key in env]
    got = ", ".join(given) if given else "none (none is set in the proxy's environment)"
    return (f"If it fetches packages (uvx, npx), check the network variables it got: {got}; "
            f"for any other variable it needs, add -e KEY VALUE or --pass-environment.")


class StartWatch:
    """Warn about a server that has not answered ``initialize``; stop it at the time-out."""

    def __init__(self, child, request_id: Any) -> None:
        self.child = child
        self.request_id = request_id
        self.tail: StderrTail = child.tail
        self.answered = False
        self.started = time.monotonic()
        self.done = Event()  # answered, or the child closed
        greenlets.spawn(self._watch, name=f"{child.name} start watch")

    def answer(self) -> None:
        self.answered = True
        self.done.set()

    def _watch(self) -> None:
        child = self.child
        if self.done.wait(START_WARNING):
            return
        logger.warning("%s: the server (pid %d) has not answered initialize after %g s; %s",
                       child.name, child.pid, START_WARNING, self.tail.text())
        if self.done.wait(max(START_TIMEOUT - START_WARNING, 0)):
            took = time.monotonic() - self.started
            if self.answered:
                logger.info("%s: the server answered initialize after %.0f s", child.name,
                            took)
            else:
                logger.warning("%s: the server (pid %d) was stopped before it answered "
                               "initialize (%s, after %.0f s); %s\n%s", child.name, child.pid,
                               child.close_reason, took, self.tail.text(), hint(child.spec))
            return
        logger.warning("%s: no answer to initialize within %g s: stopping the server "
                       "(pid %d); %s\n%s", child.name, START_TIMEOUT, child.pid,
                       self.tail.text(), hint(child.spec))
        child.close(f"the server did not answer initialize within {START_TIMEOUT:g} s")
