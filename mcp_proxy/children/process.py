"""StdioChild: a local stdio MCP server process as a link.

Owns the process: spawning it (in its own process group), the one reader greenlet that
frames its stdout, the ordered writes to its stdin, and stopping it (close stdin, wait,
SIGTERM the group, wait, SIGKILL the group). Its stdout is cut into frames by
``framing.py`` (which also finds the id of a frame over the cap, answered here with an error);
its stderr passes on to ours line by line, its last lines kept for the warnings of a server
slow to answer ``initialize`` (``startup.py``). It never interprets a message beyond parsing
its frame, and that first answer.

Neither direction buffers without bound. The reader stops reading stdout while the peer is
not ready (its client is not reading), so the server blocks on its own writes and its pipe
holds the rest. A message for stdin is written at once when the pipe takes it; what the pipe
does not take waits in a small queue that a writer greenlet drains, and a sender that finds
that queue full waits at most ``write_timeout`` before :class:`ServerBusy`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from itertools import islice

import gevent
from gevent import subprocess
from gevent.event import Event
from gevent.socket import wait_write

from mcp_proxy.children import framing
from mcp_proxy.children.startup import StartWatch, StderrTail
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.core.greenlets import closing
from mcp_proxy.core.link import Link
from mcp_proxy.core.tool_filter import ToolFilter
from mcp_proxy.errors import LinkClosed, MessageError, ServerBusy, SpawnError

logger = logging.getLogger(__name__)

_STDIN_QUEUE = 1 << 20  # bytes waiting for a server that is slow to read its stdin
_IOV_MAX = 64


class StdioChild(Link):
    """A spawned stdio MCP server; iterate it for what the server writes to stdout."""

    def __init__(self, spec: ServerSpec, name: str, max_frame: int, stop_grace: float = 2.0,
                 write_timeout: float = 10.0):
        super().__init__(name)
        self.spec = spec
        self.max_frame = max_frame
        self.stop_grace = stop_grace
        self.write_timeout = write_timeout
        self.stopped = Event()
        self._pending: deque = deque()  # what stdin has not taken yet, in order
        self._pending_bytes = 0
        self._room = Event()  # set while the queue has room
        self._room.set()
        self._writer: gevent.Greenlet | None = None
        self._unstarted = True  # until the first initialize is sent: then it is watched
        self.watch: StartWatch | None = None
        self.tool_filter = ToolFilter(spec.tools) if spec.tools else None
        try:
            self.process = subprocess.Popen(
                spec.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=spec.cwd, env=spec.child_env(), start_new_session=True,
            )
        except OSError as exc:
            raise SpawnError(f"cannot start {spec.command!r}: {exc.strerror or exc}") from exc
        self.pid = self.process.pid
        self._stdin = self.process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        # arguments may carry secrets: only the command name at INFO
        logger.info("%s: started %s (pid %d)", name, spec.command, self.pid)
        logger.debug("%s: argv %s", name, spec.display())
        self.tail = StderrTail(self.process.stderr, name)
        self._reader = greenlets.spawn(self._read_stdout, name=f"{name} stdout",
                                       on_error=closing(self))

    @property
    def state(self) -> str:
        if self.process.returncode is not None:
            return f"exited({self.process.returncode})"
        return "stopping" if self.closed.is_set() else "running"

    def send(self, message: jsonrpc.Message) -> None:
        """Write one frame, in order; raise :class:`ServerBusy` if the server takes nothing
        for ``write_timeout`` while its queue is full."""
        if self.tool_filter is not None:
            message = self.tool_filter.admit(message, self.deliver)
            if message is None:  # a hidden tool: answered as the server answers an unknown one
                return
        if self._unstarted and message.method == "initialize" \
                and message.kind == jsonrpc.REQUEST and not self.closed.is_set():
            self._unstarted = False
            self.watch = StartWatch(self, message.id)
        size = len(message.raw) + 1
        deadline = time.monotonic() + self.write_timeout
        while self._pending and self._pending_bytes + size > _STDIN_QUEUE:
            self._room.clear()
            self._room.wait(deadline - time.monotonic())
            if self.closed.is_set():
                break
            if not self._room.is_set() and time.monotonic() >= deadline:
                raise ServerBusy(f"the MCP server has not read its input for "
                                 f"{self.write_timeout:g} s")
        if self.closed.is_set():
            raise LinkClosed(f"{self.name} is closed: {self.close_reason}")
        chunks = [message.raw, b"\n"]
        if not self._pending:  # the usual case: the pipe takes the frame now, no greenlet
            chunks = self._write(chunks)
            if not chunks:
                return
        self._pending.extend(chunks)
        self._pending_bytes += sum(len(chunk) for chunk in chunks)
        if self._writer is None:
            self._writer = greenlets.spawn(self._drain, name=f"{self.name} stdin",
                                           on_error=closing(self))

    def _write(self, chunks: list) -> list:
        """Write what the pipe takes now; return what is left (closing on a broken pipe)."""
        try:
            written = os.writev(self._stdin, chunks[:_IOV_MAX])
        except BlockingIOError:
            return chunks
        except OSError as exc:
            self.close(f"server stdin closed ({exc.strerror or exc})")
            raise LinkClosed(f"{self.name}: server stdin closed") from exc
        while chunks and written >= len(chunks[0]):
            written -= len(chunks.pop(0))
        if written:
            chunks[0] = memoryview(chunks[0])[written:]
        return chunks

    def _drain(self) -> None:
        """Write the queue out as the server reads, then end (one greenlet at a time)."""
        try:
            while self._pending:
                wait_write(self._stdin)
                chunks = list(islice(self._pending, _IOV_MAX))
                count = len(chunks)
                left = self._write(chunks)
                for _ in range(count - len(left)):
                    self._pending_bytes -= len(self._pending.popleft())
                if left and len(left[0]) != len(self._pending[0]):
                    self._pending_bytes -= len(self._pending[0]) - len(left[0])
                    self._pending[0] = left[0]
                if self._pending_bytes <= _STDIN_QUEUE // 2:
                    self._room.set()
        except LinkClosed:
            pass
        finally:
            self._writer = None
            self._room.set()

    def _read_stdout(self) -> None:
        stdout = self.process.stdout
        fd = stdout.fileno()
        os.set_blocking(fd, False)
        hub = gevent.get_hub()
        readable = hub.loop.io(fd, 1)

        def read(size: int) -> bytes:
            while True:
                try:
                    return os.read(fd, size)
                except BlockingIOError:
                    hub.wait(readable)

        try:
            for line in framing.lines(read, self.max_frame, self._drop_oversize):
                if line and not line.isspace():
                    self._deliver_line(line)
                if not self.peer_ready.is_set():  # the client is behind: let the pipe fill
                    self.peer_ready.wait()
        except (OSError, ValueError) as exc:
            logger.debug("%s: stdout read ended: %s", self.name, exc)
        except LinkClosed:
            pass
        readable.close()
        stdout.close()
        code = self._wait_exit(self.stop_grace)
        self.close(f"server process exited with code {code}" if code is not None
                   else "server closed its stdout")

    def _deliver_line(self, line: bytes) -> None:
        try:
            message = jsonrpc.parse(line)
        except MessageError as exc:
            logger.warning("%s: skipped a stdout line that is not JSON-RPC (%s): %.200r",
                           self.name, exc.message, line)
            answer = jsonrpc.refused_answer(line, exc.message)
            if answer is not None:  # its request gets an error, not a wait (and the start
                self._pass(answer)  # watch learns an initialize was answered)
            return
        self._pass(message)

    def _pass(self, message: jsonrpc.Message) -> None:
        watch = self.watch
        if watch is not None and message.kind == jsonrpc.RESPONSE \
                and message.id == watch.request_id:
            self.watch = None
            watch.answer()
        if self.tool_filter is not None:
            message = self.tool_filter.answer(message)
        self.deliver(message)

    def _drop_oversize(self, head: bytes, tail: bytes, size: int) -> None:
        """Drop a frame over the cap; answer its request with an error if its id is sure."""
        logger.error("%s: dropped a %d-byte message from the server (frame cap %d bytes)",
                     self.name, size, self.max_frame)
        request_id = framing.oversize_id(head, tail)
        if request_id is not None:
            self._pass(jsonrpc.error_message(
                request_id, jsonrpc.INTERNAL_ERROR,
                f"server response of {size} bytes exceeds the proxy's frame cap "
                f"of {self.max_frame} bytes"))

    def _wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _on_close(self, reason: str) -> None:
        self._room.set()  # senders waiting for room get LinkClosed now
        if self.watch is not None:
            self.watch.done.set()
        greenlets.spawn(self._stop, name=f"{self.name} stop",
                        on_error=lambda exc: self.kill_now())

    def _stop(self) -> None:
        """Close stdin, then TERM, then KILL the process group; reap it."""
        try:
            if self._writer is not None:
                self._writer.kill()
            self._pending.clear()
            try:
                self.process.stdin.close()
            except OSError:
                pass
            code = self._wait_exit(self.stop_grace)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if code is not None:
                    break
                logger.info("%s: sending %s to pid %d", self.name, sig.name, self.pid)
                self._signal_group(sig)
                code = self._wait_exit(self.stop_grace)
            # the server may have left helpers behind in its group: they go too
            self._signal_group(signal.SIGKILL)
            logger.info("%s: server pid %d stopped (code %s)", self.name, self.pid, code)
        finally:
            self.tail.close()
            self.stopped.set()

    def kill_now(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group at once, without waiting."""
        self._signal_group(sig)

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
