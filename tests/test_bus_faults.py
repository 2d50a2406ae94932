"""Forwarded streams under faults, across real gunicorn workers (``-k gevent -w 3``) sharing
one real redis-server.

gunicorn's workers share one listening socket, so a test cannot say which worker takes a new
connection; it can keep one open. Each test opens keep-alive connections until it holds one
on every worker (``/status`` on a connection names the worker that accepted it): whatever is
sent on a held connection lands on that worker. A session opened on worker O's connection is
owned by O; its GET stream sent on worker R's connection is forwarded from R to O.

Children are counted by a marker in their command line (the ``--record`` file of the raw
fixture server, unique to the test), so a server process left behind by any worker is seen.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import socket
import threading
import time

import pytest
from test_backpressure import rss
from test_lifecycle import wait_until

from conftest import RAW_SERVER, GunicornProcess, pids_alive, rpc

WORKERS = 3
SSE_ACCEPT = {"Accept": "text/event-stream"}
POST_HEADERS = {"Accept": "application/json, text/event-stream",
                "Content-Type": "application/json"}


class Farm(GunicornProcess):
    """gunicorn with the bus, its stderr read line by line (the tests wait on log lines)."""

    def __init__(self, redis_server, proxy_args: str, marker: str) -> None:
        super().__init__(f"{proxy_args} -- {' '.join(RAW_SERVER)} --record {marker}",
                         "--keep-alive", "120", "--graceful-timeout", "5", workers=WORKERS,
                         env={"MCP_PROXY_REDIS_URL": redis_server.url,
                              # three missed pings (3 s) are not mistaken on a busy machine
                              "MCP_PROXY_ROUTE_HEADER": "1", "MCP_PROXY_BUS_PING": "1"})
        self.marker = marker
        self.held: list[Held] = []  # closed first on exit: gunicorn waits for open ones
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def __exit__(self, *exc) -> None:
        for conn in self.held:
            conn.close()
        super().__exit__(*exc)

    def hold(self, rcvbuf: int | None = None) -> Held:
        conn = Held(self.port, rcvbuf)
        self.held.append(conn)
        return conn

    def _read(self) -> None:
        for raw in self.proc.stderr:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def expect(self, pattern: str, timeout: float) -> str:
        """The first stderr line matching ``pattern`` (waiting at most ``timeout`` s)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if regex.search(line):
                    return line
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout} s:\n"
                                     + "\n".join(self.seen[-40:])) from None

    def children(self) -> list[int]:
        """The live fixture servers of this farm, whichever worker started them."""
        pids = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if self.marker.encode() in handle.read():
                        pids.append(int(entry))
            except (OSError, ValueError):
                continue
        return pids_alive(pids)


class Held(http.client.HTTPConnection):
    """A keep-alive connection to the farm, and the worker that accepted it."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        super().__init__("127.0.0.1", port, timeout=10)
        self.rcvbuf = rcvbuf
        self.worker = wait_until(self.connected_worker, 10)
        self.tag = self.worker["id"]

    def connect(self) -> None:
        sock = socket.socket()
        if self.rcvbuf:  # before connecting: the window is agreed in the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock

    def connected_worker(self) -> dict | None:
        worker = self.call("GET", "/status")[2]["worker"]
        return worker if worker["redis"] == "connected" else None

    def call(self, method: str, path: str, body: dict | None = None,
             headers: dict | None = None) -> tuple[int, dict, dict | None]:
        """A request with a whole answer: status, headers, the JSON body (if any)."""
        self.request(method, path, json.dumps(body).encode() if body is not None else None,
                     headers or {})
        answer = self.getresponse()
        data = answer.read()
        return answer.status, dict(answer.getheaders()), json.loads(data) if data else None

    def stream(self, session_id: str) -> http.client.HTTPResponse:
        """Open the session's GET stream on this connection; return it, headers read."""
        self.request("GET", "/mcp", headers={**SSE_ACCEPT, "Mcp-Session-Id": session_id})
        answer = self.getresponse()
        assert answer.status == 200, answer.read()
        assert answer.getheader("Mcp-Proxy-Route") == f"{self.tag} forwarded"
        return answer


def hold_every_worker(farm: Farm) -> dict[str, Held]:
    """One held connection per worker, by tag."""
    held: dict[str, Held] = {}
    deadline = time.monotonic() + 20
    while len(held) < WORKERS:
        assert time.monotonic() < deadline, f"connections reached only workers {set(held)}"
        conn = farm.hold()
        if conn.tag in held:
            conn.close()
        else:
            held[conn.tag] = conn
    return held


def hold_on(farm: Farm, tag: str, rcvbuf: int) -> Held:
    """A connection on worker ``tag`` with a small receive buffer."""
    for _ in range(200):
        conn = farm.hold(rcvbuf)
        if conn.tag == tag:
            return conn
        conn.close()
    raise AssertionError(f"no connection reached worker {tag} in 200 tries")


def open_session(owner: Held) -> str:
    status, headers, answer = owner.call("POST", "/mcp", rpc(
        "initialize", 0, protocolVersion="2025-06-18"), POST_HEADERS)
    assert status == 200, answer
    return headers["Mcp-Session-Id"]


def sessions(owner: Held) -> int:
    """How many sessions the worker holds (asking the session itself would keep it alive)."""
    return owner.call("GET", "/status")[2]["sessions"]


def gone(owner: Held, session_id: str) -> bool:
    """Whether a POST to the session is answered 404 (only once it has ended)."""
    return owner.call("POST", "/mcp", rpc("ping", "gone?"),
                      {**POST_HEADERS, "Mcp-Session-Id": session_id})[0] == 404


def notify(owner: Held, session_id: str, count: int, size: int) -> None:
    """Make the session's server send ``count`` log lines of ``size`` bytes to its GET stream."""
    status, _, answer = owner.call("POST", "/mcp", rpc(
        "tools/call", "notify", name="notify", arguments={"count": count, "size": size}),
        {**POST_HEADERS, "Mcp-Session-Id": session_id})
    assert status == 200 and answer["result"] == {"content": []}, answer


def next_message(stream: http.client.HTTPResponse) -> dict:
    """The next message event of an open event stream (pings skipped; bounded by the
    connection's timeout)."""
    while True:
        line = stream.readline()
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            return json.loads(line[6:])


def read_to_end(stream: http.client.HTTPResponse) -> None:
    """Read what the kernel still holds until the stream ends (a stream that is never cut
    fails with the connection's read timeout)."""
    try:
        while stream.read1(1 << 16):
            pass
    except (ConnectionError, http.client.IncompleteRead):
        pass


@pytest.fixture
def marker(tmp_path) -> str:
    return str(tmp_path / "children.record")


def test_closing_one_of_two_forwarded_streams_leaves_the_other(redis_server, marker):
    """Two receiving workers' first forwarded calls carry the same number at one owner: one
    client's leaving must end its own stream and session, and nothing of the other's."""
    with Farm(redis_server, "--keepalive 0.25", marker) as farm:
        held = hold_every_worker(farm)
        owner, first, second = held.values()
        ids = [open_session(owner), open_session(owner)]
        children = wait_until(farm.children, 10)
        assert len(children) == 2
        streams = [first.stream(ids[0]), second.stream(ids[1])]  # each worker's call no. 1

        first.close()  # the first client leaves
        wait_until(lambda: sessions(owner) == 1, 5)
        assert gone(owner, ids[0])
        wait_until(lambda: len(farm.children()) == 1, 5)

        notify(owner, ids[1], 3, 10)  # the second client's stream still delivers
        assert [next_message(streams[1])["params"]["data"] for _ in range(3)] == \
            ["0:" + "x" * 10, "1:" + "x" * 10, "2:" + "x" * 10]
        assert sessions(owner) == 1

        second.close()
        wait_until(lambda: sessions(owner) == 0, 5)
        wait_until(lambda: not farm.children(), 5)  # no server process left behind
        assert gone(owner, ids[1])


def test_a_cancel_lost_to_a_redis_outage_still_ends_the_call(redis_server, marker):
    """The client of a forwarded stream leaves while Redis is down: the receiving worker
    cannot tell the owner, which ends the call when its receiver stops vouching for it."""
    with Farm(redis_server, "--keepalive 60", marker) as farm:
        held = hold_every_worker(farm)
        owner, receiver, _ = held.values()
        session_id = open_session(owner)
        stream = receiver.stream(session_id)
        assert stream.readline() == b": ping\n"
        [child] = wait_until(farm.children, 10)

        redis_server.stop()
        receiver.close()
        farm.expect(rf"worker {receiver.tag}: could not tell worker {owner.tag} that its "
                    r"client left", 10)
        redis_server.start()
        wait_until(lambda: owner.connected_worker(), 10)
        farm.expect(rf"worker {owner.tag}: worker {receiver.tag} no longer waits for", 10)
        wait_until(lambda: sessions(owner) == 0, 5)
        wait_until(lambda: not pids_alive([child]), 5)


def unread_stream(farm: Farm) -> tuple[Held, str, Held, http.client.HTTPResponse, int]:
    """A session on one worker, its GET stream forwarded from another to a client with a
    small receive buffer that reads nothing: (owner, session id, the client's connection,
    its stream, the session's server process)."""
    held = hold_every_worker(farm)
    owner, other, _ = held.values()
    session_id = open_session(owner)
    reader = hold_on(farm, other.tag, 16 << 10)
    stream = reader.stream(session_id)
    [child] = wait_until(farm.children, 10)
    return owner, session_id, reader, stream, child


def ended_everywhere(owner: Held, stream: http.client.HTTPResponse, child: int) -> None:
    """The client's stream was cut, and the call cancelled at its owner: the session (which
    had nothing else open) and its server process end."""
    read_to_end(stream)  # what the kernel held, then the cut
    wait_until(lambda: sessions(owner) == 0, 5)
    wait_until(lambda: not pids_alive([child]), 5)


def test_a_forwarded_stream_nobody_reads_is_cut_at_max_queued_size(redis_server, marker):
    """The owner keeps publishing to a receiving worker whose client reads nothing: what that
    worker holds stays within --max-queued-size, and the stream is cut and cancelled."""
    with Farm(redis_server, "--max-queued-size 4MB --keepalive 60", marker) as farm:
        owner, session_id, reader, stream, child = unread_stream(farm)
        before = peak = rss(reader.worker["pid"])

        notify(owner, session_id, 400, 100_000)  # 40 MB for a client that takes nothing
        deadline = time.monotonic() + 20
        cut = None
        while cut is None and time.monotonic() < deadline:
            peak = max(peak, rss(reader.worker["pid"]))
            try:
                cut = farm.expect(r"client is not reading", 0.02)
            except AssertionError:
                continue
        assert peak - before < (4 << 20) + (8 << 20), f"grew by {(peak - before) >> 20} MiB"
        assert cut is not None, "the stream was not cut"
        ended_everywhere(owner, stream, child)


def test_a_forwarded_stream_nobody_reads_is_cut_at_the_stall_timeout(redis_server, marker):
    """A client that takes nothing for --stall-timeout loses a forwarded stream as it would
    lose a local one; the owner ends the session."""
    with Farm(redis_server, "--stall-timeout 2 --keepalive 60", marker) as farm:
        owner, session_id, _, stream, child = unread_stream(farm)

        notify(owner, session_id, 120, 100_000)  # 12 MB: more than the sockets hold
        started = time.monotonic()
        farm.expect(r"took nothing for 2 s", 15)
        assert time.monotonic() - started >= 1.5  # the write blocked after the answer came
        ended_everywhere(owner, stream, child)
