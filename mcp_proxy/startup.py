"""What a server shows while it starts: its stderr's last lines, and a watch on ``initialize``.

A server run through ``uvx`` or ``npx`` may spend its first minute fetching packages, and
behind a corporate proxy or TLS inspection it can retry for ever: all our log said was
"started npx". So a child's stderr passes through :class:`StderrTail` (on to ours, a whole
line at a time, as the server wrote it) which keeps its last lines, and :class:`StartWatch`
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

from gevent.event import Event
from gevent.socket import wait_write

from mcp_proxy import supervise
from mcp_proxy.settings import NETWORK_ENV_KEYS, ServerSpec

logger = logging.getLogger(__name__)

START_WARNING = float(os.environ.get("MCP_PROXY_START_WARNING", "10"))
# as long as a shared child's initialize may take (multiplexer.START_TIMEOUT)
START_TIMEOUT = float(os.environ.get("MCP_PROXY_START_TIMEOUT", "60"))
TAIL_LINES = 10
_LINE_CAP = 4096  # bytes of one stderr line passed on at a time, and kept


def _write_stderr(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(2, view):]
        except BlockingIOError:
            wait_write(2)


class StderrTail:
    """Pass a child's stderr on to ours, line by line, and keep its last lines."""

    def __init__(self, name: str, pipe) -> None:
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._pipe = pipe
        self.reader = supervise.spawn(self._pump, name=f"{name} stderr")

    def _pump(self) -> None:
        forward = True
        try:
            while line := self._pipe.readline(_LINE_CAP):
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.lines.append(text)
                if forward:
                    try:
                        _write_stderr(line)
                    except OSError:  # our stderr is gone: keep the tail for our log
                        forward = False
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the child is gone
        finally:
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
        supervise.spawn(self._watch, name=f"{child.name} start watch")

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
