"""Slow and vanished clients: backpressure, stall timeout, a busy server's stdin, disconnects.

Unit tests run gevent objects in the test process (no monkey-patching); the end-to-end ones
drive the real CLI over raw sockets, so a client can stop reading or vanish at will.
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import time

import gevent
import pytest
import requests
from test_lifecycle import child_pids, wait_until

from conftest import (
    RAW_SERVER,
    STREAM_HEADERS,
    GunicornProcess,
    open_sse,
    open_streamable,
    pids_alive,
    rpc,
)
from mcp_proxy.children.process import StdioChild
from mcp_proxy.config.settings import ServerSettings, ServerSpec
from mcp_proxy.core import jsonrpc
from mcp_proxy.errors import ServerBusy
from mcp_proxy.server.sessions import HIGH_WATER, LOW_WATER, Registry
from mcp_proxy.server.streamable_session import StreamableSession


def msg(**obj) -> jsonrpc.Message:
    return jsonrpc.Message({"jsonrpc": "2.0", **obj})


def session(**settings) -> StreamableSession:
    return StreamableSession(Registry(ServerSettings(servers={}, **settings)), "")


# -- units --------------------------------------------------------------------------------

def test_streams_released_before_they_were_read_are_refunded():
    s = session(max_queued=10_000)
    for n in range(200):  # 200 abandoned progress messages, ~20 kB in all
        stream = s.open_request(msg(id=n, method="tools/call",
                                    params={"_meta": {"progressToken": n}}))
        s.send(msg(method="notifications/progress", params={"progressToken": n, "progress": 1}))
        assert stream.queued > 0
        s.release(jsonrpc.id_key(n))  # the client left before reading it
        stream.discard()
    assert not s.closed.is_set(), s.close_reason
    assert s.queued == 0 and s.pressing == 0


def test_backpressure_flips_at_the_marks_and_a_backlog_does_not_press():
    s = session()
    big = msg(method="notifications/message", params={"data": "x" * (64 << 10)})
    s.send(big)  # no stream open: the backlog, which only counts against the budget
    assert s.queued > 0 and s.pressing == 0 and s.ready.is_set()
    stream = s.open_request(msg(id=1, method="tools/call"))
    while s.pressing < HIGH_WATER:
        s.send(big)
    assert not s.ready.is_set()
    while s.pressing > LOW_WATER:
        stream.read(1)
    assert s.ready.is_set()
    s.unsolicited.attach_reader()  # a GET stream opens: the backlog now presses too
    assert s.pressing == stream.queued + s.unsolicited.queued


def test_a_large_message_is_held_once():
    text = "é" * (100 << 10)
    raw = json.dumps({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": text}, "_meta": {"progressToken": 7}}},
        ensure_ascii=False).encode()
    message = jsonrpc.parse(raw)
    assert message.raw is raw
    assert message.id == "a" and message.method == "tools/call"
    assert message.params == {"_meta": {"progressToken": 7}, "name": "echo"}  # routing only
    assert len(json.dumps(message._obj)) < 200
    assert message.obj["params"]["arguments"]["text"] == text  # the whole, on demand


def slow_cat(delay: float) -> ServerSpec:
    code = (f"import sys, time; time.sleep({delay})\n"
            "for line in sys.stdin.buffer: sys.stdout.buffer.write(line); sys.stdout.flush()")
    return ServerSpec(sys.executable, ["-c", code])


def test_a_server_that_reads_nothing_makes_senders_busy_not_blocked():
    child = StdioChild(slow_cat(60), "t", 1 << 20, stop_grace=0.5, write_timeout=0.3)
    frame = msg(method="notifications/message", params={"data": "x" * (100 << 10)})
    started = time.monotonic()
    with pytest.raises(ServerBusy):
        for _ in range(100):  # 10 MiB: far more than the pipe and the queue hold
            child.send(frame)
    assert time.monotonic() - started < 10
    assert not child.closed.is_set()  # busy is not dead: the session goes on
    child.close("test over")


def test_a_slow_reader_gets_every_frame_in_order():
    child = StdioChild(slow_cat(1), "t", 1 << 20, stop_grace=0.5, write_timeout=30)
    for n in range(40):  # 4 MiB, more than the pipe and the queue: senders wait their turn
        child.send(msg(id=n, method="echo", params={"data": f"{n}" * (100 << 10)}))
    seen = []
    with gevent.Timeout(30):
        for message in child:
            seen.append(message.id)
            assert message.obj["params"]["data"] == f"{message.id}" * (100 << 10)
            if len(seen) == 40:
                break
    assert seen == list(range(40))
    child.close("test over")


# -- end to end ---------------------------------------------------------------------------

def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raw_get(base: str, path: str, headers: str = "", rcvbuf: int = 16 << 10) -> socket.socket:
    """A GET whose client never reads past what it asks for here (a small receive buffer)."""
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Accept: text/event-stream\r\n{headers}\r\n".encode())
    return sock


def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def endpoint_event(sock: socket.socket) -> str:
    """The session id in the endpoint event, read off the raw chunked stream."""
    data = read_until(sock, b"session_id=")
    head, _, rest = data.partition(b"session_id=")
    rest = read_until(sock, b"\n", rest)
    return rest.split(b"\n")[0].decode().strip()


def test_stalled_sse_reader_costs_no_memory_and_loses_its_session(proxy_factory):
    proxy = proxy_factory("--stall-timeout", "3", "--write-timeout", "0.5",
                          "--keepalive", "60", "--", *RAW_SERVER)
    stalled = raw_get(proxy.base, "/sse")
    session_id = endpoint_event(stalled)
    endpoint = f"{proxy.base}/messages/?session_id={session_id}"
    other, other_endpoint = open_sse(proxy.base)
    before = rss(proxy.proc.pid)
    peak, statuses, busy = before, [], None
    big = {"text": "x" * (128 << 10)}
    for n in range(800):  # asks for 100 MiB of answers it never reads
        posted = requests.post(endpoint, json=rpc("tools/call", n, name="echo", arguments=big),
                               timeout=10)
        statuses.append(posted.status_code)
        peak = max(peak, rss(proxy.proc.pid))
        if posted.status_code != 202:
            busy = posted
            break
    assert busy is not None and busy.status_code == 503, statuses[-5:]
    assert busy.headers["Retry-After"].isdigit()
    assert busy.json()["error"]["message"].startswith("Server busy")
    assert peak - before < 32 << 20, (before, peak)  # bounded; make bench reports the figure
    requests.post(other_endpoint, json=rpc("ping", "other"), timeout=10)
    assert other.next_message()["id"] == "other"  # the other session is not held up
    proxy.expect(r"took nothing for 3 s", timeout=15)
    wait_until(lambda: requests.post(endpoint, json=rpc("ping", 1), timeout=10).status_code
               == 404, timeout=10)
    stalled.close()
    other.close()


def test_stalled_streamable_request_stream_loses_its_session(proxy_factory):
    proxy = proxy_factory("--stall-timeout", "2", "--keepalive", "60", "--", *RAW_SERVER,
                          "--huge-line", str(12 << 20))
    sid = open_streamable(proxy.base)["Mcp-Session-Id"]
    host, port = proxy.base.rsplit("/", 1)[1].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    body = json.dumps(rpc("tools/call", 1, name="echo", arguments={"text": "hi"})).encode()
    sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nMcp-Session-Id: {sid}\r\n"
                 f"Accept: application/json, text/event-stream\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    assert b"text/event-stream" in read_until(sock, b"\r\n\r\n")  # then reads nothing
    proxy.expect(r"took nothing for 2 s", timeout=20)
    gone = requests.post(proxy.base + "/mcp", json=rpc("ping", 2), timeout=10,
                         headers={**STREAM_HEADERS, "Mcp-Session-Id": sid})
    assert gone.status_code == 404
    sock.close()


def test_backlog_nobody_reads_is_capped_by_max_queued_size(proxy_factory):
    proxy = proxy_factory("--max-queued-size", "64kB", "--", *RAW_SERVER)
    headers = open_streamable(proxy.base)
    answer = requests.post(proxy.base + "/mcp", headers=headers, timeout=10, json=rpc(
        "tools/call", 1, name="notify", arguments={"count": 200, "size": 1000}))
    assert answer.json()["result"] == {"content": []}
    proxy.expect("client is not reading")  # 200 kB for a GET stream that never opened
    wait_until(lambda: requests.post(proxy.base + "/mcp", headers=headers, timeout=10,
                                     json=rpc("ping", 2)).status_code == 404)


# -- disconnects ----------------------------------------------------------------------------

def first_child(base: str) -> list[int]:
    return wait_until(lambda: child_pids(base))


def close_sse_and_wait_for_its_server(base: str) -> None:
    """Open an SSE session with a server, close the stream: the server must go at once (the
    proxies under test ping every 60 s, so a ping cannot be what noticed)."""
    reader, endpoint = open_sse(base)
    requests.post(endpoint, json=rpc("ping", 1), timeout=10)
    reader.next_message()
    pids = first_child(base)
    reader.close()
    wait_until(lambda: not pids_alive(pids), timeout=5)
    assert not child_pids(base)


def test_closed_sse_stream_ends_its_session_at_once(proxy_factory):
    proxy = proxy_factory("--keepalive", "60", "--", *RAW_SERVER)
    close_sse_and_wait_for_its_server(proxy.base)
    proxy.expect("client closed its event stream")


def test_closed_sse_stream_is_noticed_at_once_under_gunicorn():
    args = "--keepalive 60 -- " + shlex.join(RAW_SERVER)
    with GunicornProcess(args, "--graceful-timeout", "3") as gunicorn:
        close_sse_and_wait_for_its_server(gunicorn.base)


def test_closed_streamable_streams_are_noticed_at_once(proxy_factory):
    proxy = proxy_factory("--keepalive", "60", "--", *RAW_SERVER)
    headers = open_streamable(proxy.base)
    # a POST answered as a stream (the server asks for sampling first), then left
    call = requests.post(proxy.base + "/mcp", headers=headers, stream=True, timeout=10,
                         json=rpc("tools/call", 1, name="ask", arguments={"prompt": "x"}))
    assert call.headers["Content-Type"].startswith("text/event-stream")
    call.close()
    proxy.expect(r"client closed the stream of request 1", timeout=5)
    pids = first_child(proxy.base)
    stream = requests.get(proxy.base + "/mcp", headers=headers, stream=True, timeout=10)
    assert stream.status_code == 200
    stream.close()  # the client leaves without DELETE
    proxy.expect("client closed its GET stream", timeout=5)
    wait_until(lambda: not pids_alive(pids), timeout=5)
    proxy.expect("did not reopen it within 1 s")
