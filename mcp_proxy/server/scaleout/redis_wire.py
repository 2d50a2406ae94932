"""The Redis wire protocol (RESP2) of the bus's hot path: pipelined PUBLISH, one inbox reader.

It owns the bytes on the bus's own Redis connections: commands packed here, replies parsed
here. It knows nothing of frames (bus.py) and never retries a command that may have gone out.

redis-py's client spends ~70 us of CPU per PUBLISH in its layers (pool, retry, command
parsing, response callbacks) against ~10 us for the bytes themselves, and its ``PubSub``
polls before every read. Both ends of every forwarded request pay that twice, so the bus
keeps redis-py for what it is good at (the URL, AUTH/ACL, TLS, the handshake, the rare SET
and GETDEL) and talks on the connections it makes directly: RESP2, commands packed here.

:class:`Publisher` writes each PUBLISH at once under a lock, in order, and one greenlet
reads the replies in the same order, so concurrent publishers share one connection and
one round trip's wait; that greenlet reads all the time, so a connection Redis closed (a
restart) is seen broken at once and the next PUBLISH goes out on a new one instead of into
the dead socket. :class:`Inbox` is a subscribed connection, pinged every few seconds so that
a connection that died without a word is noticed; a read that times out is not the verdict
by itself (a process stopped for a while wakes up to overdue timers before it has read what
waits on its sockets): a PING must also go unanswered.

redis-py's private API, used here and nowhere else: ``Connection._sock`` (the connected,
possibly TLS-wrapped socket; read once, in :class:`Replies`), and the pool's undocumented
``connection_class`` and ``connection_kwargs`` (:func:`connection`). The public alternative
is the cost above: ~70 us of CPU per PUBLISH through the client, ~15 us per reply through
its parser, where this path spends ~10 us.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import gevent
import redis
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from mcp_proxy.errors import BusDown

PUBLISH_TIMEOUT = 5.0
PROBE_TIMEOUT = 2.0  # how long an inbox that timed out waits for the answer to its PING
_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def connection(pool: redis.ConnectionPool):
    """A new connection as ``pool`` makes them (URL, AUTH, TLS), not counted against its
    limit: these are ours for as long as they live, and a reconnect replaces them."""
    return pool.connection_class(**pool.connection_kwargs)


def pack(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(b"\r\n")
    return b"".join(out)


class Replies:
    """RESP2 replies read straight off a connected connection's socket.

    redis-py's parser costs ~15 us of Python per reply; the bus reads three shapes (an
    integer, a three-part message, a pong), parsed here from one buffer. redis-py has read
    all of its handshake's replies by the time ``connect()`` returns, so the socket holds
    only what follows.
    """

    def __init__(self, conn) -> None:
        self.sock = conn._sock  # redis-py's name for it since 2.x (setup.cfg bounds the major)
        self.buf = b""
        self.pos = 0  # what is before it was parsed: a frame's bytes are not copied per line
        self.mark = 0  # where the reply being parsed starts: kept until it is whole

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise redis.ConnectionError("Redis closed the connection")
        self.buf = self.buf[self.mark:] + chunk
        self.pos -= self.mark
        self.mark = 0

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._more()
        line, self.pos = self.buf[self.pos:end], end + 2
        return line

    def next(self):
        """The next reply: int, bytes, list, None, or a ResponseError (returned, not raised).

        A read that times out leaves the reply unread, to be parsed whole by the next call.
        """
        self.mark = self.pos
        try:
            return self._parse()
        except TimeoutError:
            self.pos = self.mark
            raise

    def _parse(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) - self.pos < size + 2:
                self._more()
            data, self.pos = self.buf[self.pos:self.pos + size], self.pos + size + 2
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._parse() for _ in range(count)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            return redis.ResponseError(rest.decode(errors="replace"))
        raise redis.ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


class _Line:
    """One publishing connection, its replies awaited in the order the commands went out."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.replies = Replies(conn)
        self.waiting: deque[AsyncResult] = deque()
        self.broken = False


class Publisher:
    """PUBLISH over one connection, pipelined; (re)connects on first use after a failure."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.line: _Line | None = None
        self.lock = Semaphore()

    def publish(self, channel: bytes, data: bytes) -> int:
        waiter = AsyncResult()
        command = pack(b"PUBLISH", channel, data)
        with self.lock:
            line = self.line
            try:
                if line is None:
                    conn = connection(self.pool)
                    conn.connect()
                    line = self.line = _Line(conn)
                    gevent.spawn(self._read, line)
                line.waiting.append(waiter)
                line.conn.send_packed_command([command], check_health=False)
            except _ERRORS as exc:
                if line is not None:
                    self._broken(line, exc)
                raise BusDown(str(exc)) from exc
        try:
            return waiter.get(timeout=PUBLISH_TIMEOUT)
        except gevent.Timeout:
            self._broken(line, TimeoutError("no reply to PUBLISH"))
            raise BusDown(f"Redis did not answer within {PUBLISH_TIMEOUT:g} s",
                          unsure=True) from None

    def _read(self, line: _Line) -> None:
        while not line.broken:
            try:
                reply = line.replies.next()  # an error reply (an ACL refusal) is its own
                if not line.waiting:
                    raise redis.ConnectionError(f"a reply nothing was sent for: {reply!r}")
            except TimeoutError:
                continue  # idle; a PUBLISH awaiting its reply bounds its own wait
            except _ERRORS as exc:
                self._broken(line, exc)
                return
            waiter = line.waiting.popleft()
            if isinstance(reply, Exception):
                waiter.set_exception(BusDown(f"PUBLISH refused: {reply}"))
            else:
                waiter.set(reply)

    def _broken(self, line: _Line, exc: BaseException) -> None:
        """Fail whatever waits on ``line``; the next publish connects afresh."""
        if line.broken:
            return
        line.broken = True
        if self.line is line:
            self.line = None
        line.conn.disconnect()  # its reader, if waiting, wakes up and ends
        while line.waiting:  # written: Redis may have taken them before it went
            line.waiting.popleft().set_exception(BusDown(str(exc), unsure=True))

    def close(self) -> None:
        if self.line is not None:
            self._broken(self.line, ConnectionError("closed"))


class Inbox:
    """One subscribed connection: ``messages()`` yields each payload published to it."""

    def __init__(self, pool: redis.ConnectionPool, channel: str, ping: float) -> None:
        self.conn = connection(pool)
        self.channel = channel.encode()
        self.ping = ping
        self._pinger = None

    def messages(self) -> Iterator[bytes]:
        """Subscribe, then yield payloads; raises a redis ConnectionError when it is lost."""
        conn = self.conn
        conn.connect()
        conn.send_packed_command([pack(b"SUBSCRIBE", self.channel)], check_health=False)
        replies = Replies(conn)
        reply = replies.next()
        if isinstance(reply, redis.ResponseError):
            raise reply  # a refusal (ACL, a wrong database): not a connection to retry
        if not (isinstance(reply, list) and reply[0] == b"subscribe"):
            raise redis.ConnectionError(f"unexpected answer to SUBSCRIBE: {reply!r}")
        self._pinger = gevent.spawn(self._ping, conn)
        probing = False
        try:
            yield b""  # subscribed: the channel is ours from here on (a frame is never empty)
            while True:
                try:
                    reply = replies.next()  # bounded by the socket timeout
                except TimeoutError:
                    if probing:
                        raise redis.TimeoutError("Redis did not answer a PING") from None
                    probing = True  # asleep, or cut off? a PING tells
                    replies.sock.settimeout(PROBE_TIMEOUT)
                    conn.send_packed_command([pack(b"PING")], check_health=False)
                    continue
                if probing:
                    probing = False
                    replies.sock.settimeout(conn.socket_timeout)
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    yield reply[2]
        finally:
            self._pinger.kill(block=False)
            conn.disconnect()

    def _ping(self, conn) -> None:
        # errors are the reader's to see: a dead connection fails its next read
        ping = pack(b"PING")
        while True:
            gevent.sleep(self.ping)
            try:
                conn.send_packed_command([ping], check_health=False)
            except _ERRORS:
                return
