"""StdioDownstream: our own stdin/stdout as a link (client mode).

stdin is read through gevent's cooperative file object (plain ``sys.stdin`` would block every
greenlet); stdout carries protocol messages only, one JSON object per line, written whole
under a lock. Our logs go to stderr. A line that is not JSON-RPC gets a JSON-RPC error with
a null id, as the spec asks, and is logged; it never reaches the remote.
"""

from __future__ import annotations

import logging

from gevent.fileobject import FileObjectPosix
from gevent.lock import RLock

from mcp_proxy.config.settings import ToolRules
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.link import Link
from mcp_proxy.core.tool_filter import ToolFilter
from mcp_proxy.errors import LinkClosed, MessageError

logger = logging.getLogger(__name__)


class StdioDownstream(Link):
    """The desktop client on the other end of our stdin and stdout."""

    def __init__(self, stdin_fd: int = 0, stdout_fd: int = 1, max_frame: int = 64 << 20,
                 tools: ToolRules | None = None):
        super().__init__("stdio")
        self.max_frame = max_frame
        self.tool_filter = ToolFilter(tools) if tools else None
        self._in = FileObjectPosix(stdin_fd, "rb", closefd=False, bufsize=1 << 18)
        self._out = FileObjectPosix(stdout_fd, "wb", closefd=False, bufsize=1 << 18)
        self._lock = RLock()
        self._reader = spawn(self._read, name="stdin reader", on_error=closing(self))

    def send(self, message: jsonrpc.Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"stdout is closed: {self.close_reason}")
        if self.tool_filter is not None:
            message = self.tool_filter.answer(message)
        try:
            with self._lock:
                self._out.write(message.raw + b"\n")
                self._out.flush()
        except (OSError, ValueError) as exc:
            self.close(f"stdout closed ({exc})")
            raise LinkClosed("stdout closed") from exc

    def _read(self) -> None:
        try:
            while True:
                line = self._in.readline(self.max_frame + 1)
                if not line:
                    break
                if len(line) > self.max_frame and not line.endswith(b"\n"):
                    logger.error("stdin: message over %d bytes; skipping it", self.max_frame)
                    while line and not line.endswith(b"\n"):
                        line = self._in.readline(1 << 20)
                    self._reject(jsonrpc.INVALID_REQUEST, "message too large")
                    continue
                line = line.strip()
                if not line:
                    continue
                try:
                    message = jsonrpc.parse(line)
                except MessageError as exc:
                    logger.warning("stdin: %s: %.200r", exc.message, line)
                    self._reject(exc.code, exc.message)
                    continue
                if self.tool_filter is not None:
                    message = self.tool_filter.admit(message, self.send)
                    if message is None:  # a hidden tool: the remote never hears of it
                        continue
                self.deliver(message)
        except (OSError, ValueError) as exc:
            logger.debug("stdin read ended: %s", exc)
        except LinkClosed:
            return
        self.close("stdin closed")

    def _reject(self, code: int, text: str) -> None:
        try:
            self.send(jsonrpc.error_message(None, code, text))
        except LinkClosed:
            pass
