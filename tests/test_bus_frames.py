"""What crosses the bus: frames as they are framed and parsed, blobs across the by-reference
threshold, and what a request for a session of a made-up worker costs.

The reply parser (scaleout/redis_wire.py) is fed generated streams of RESP2 replies cut at
arbitrary points; a socket that hands out exactly those chunks is the one stand-in here, since
a real socket coalesces what was sent and so cannot place a chunk boundary on purpose.
"""

from __future__ import annotations

import socket
import time
from collections import deque

import redis
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RAW_SERVER, STREAM_HEADERS, open_sse, rpc
from mcp_proxy.errors import BlobLost, BusDown
from mcp_proxy.server.scaleout import bus as bus_module
from mcp_proxy.server.scaleout.bus import BLOB_OVER, Bus
from mcp_proxy.server.scaleout.frames import decode, encode
from mcp_proxy.server.scaleout.redis_wire import Replies

ENV = {"MCP_PROXY_ROUTE_HEADER": "1", "MCP_PROXY_BUS_PING": "0.3"}
BOUNDED = settings(max_examples=200, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

# text that looks like framing: RESP markers, the frame's own header/payload separator
FRAME_LIKE = st.sampled_from([b"\r\n", b"\n", b"\r", b"*3\r\n$7\r\nmessage\r\n", b"$-1\r\n",
                              b":1\r\n", b"-ERR x\r\n", b'{"k":"resp","c":"1"}\n', b"\x00"])
PAYLOADS = st.lists(st.one_of(st.binary(max_size=40), FRAME_LIKE), max_size=12).map(b"".join)
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
                        st.lists(st.text(), max_size=3))
# "b" is the bus's own key (a blob's reference); no sender sets it
HEADERS = st.dictionaries(st.text().filter(lambda key: key != "b"), JSON_VALUES, max_size=6)


class Chunks:
    """A socket's ``recv`` that returns the given chunks, one per call, and raises a timeout
    once before each chunk whose index is in ``stalls``."""

    def __init__(self, chunks: list[bytes], stalls: set[int]) -> None:
        self.chunks = deque(chunks)
        self.stalls = stalls
        self.index = 0

    def recv(self, size: int) -> bytes:
        if self.index in self.stalls:
            self.stalls.discard(self.index)
            raise TimeoutError("timed out")
        chunk = self.chunks.popleft() if self.chunks else b""
        if len(chunk) > size:
            self.chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        self.index += 1
        return chunk


class Connection:
    def __init__(self, sock: Chunks) -> None:
        self._sock = sock


def as_resp(reply) -> bytes:
    """A reply as Redis writes it (RESP2)."""
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(as_resp(part) for part in reply)
    return b"-%s\r\n" % reply.encode()  # an error


REPLIES = st.one_of(
    st.tuples(HEADERS, PAYLOADS).map(lambda frame: [b"message", b"mcpp:in:abcdefgh",
                                                    encode(*frame)]),
    st.integers(min_value=0, max_value=2**40),
    st.just([b"pong", b""]),
    st.just("ERR refused"),
)


@BOUNDED
@given(replies=st.lists(REPLIES, min_size=1, max_size=8), data=st.data())
def test_replies_cut_anywhere_parse_to_what_was_sent(replies, data):
    stream = b"".join(as_resp(reply) for reply in replies)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=20)))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    chunks = [stream[start:end] for start, end in bounds]
    stalls = data.draw(st.sets(st.integers(0, len(chunks)), max_size=4))
    parser = Replies(Connection(Chunks(chunks, stalls)))
    got = []
    while len(got) < len(replies):
        try:
            got.append(parser.next())
        except TimeoutError:  # a timed-out read loses nothing: the next call parses it whole
            continue
    for sent, parsed in zip(replies, got, strict=True):
        if isinstance(sent, str):  # an error reply is returned, not raised
            assert isinstance(parsed, redis.ResponseError) and str(parsed) == sent
        else:
            assert parsed == sent
            if isinstance(sent, list) and sent[0] == b"message":
                assert decode(parsed[2]) == decode(sent[2])


@BOUNDED
@given(header=HEADERS, payload=PAYLOADS)
def test_a_frame_decodes_to_its_header_and_payload(header, payload):
    assert decode(encode(header, payload)) == (header, payload)


def test_frames_across_the_blob_threshold_arrive_whole(redis_server):
    bus = Bus(redis_server.url, on_frame=lambda data: None, on_fatal=lambda exc: None)
    sizes = st.one_of(st.integers(BLOB_OVER - 2, BLOB_OVER + 2), st.integers(0, 3 * BLOB_OVER))

    @settings(max_examples=60, deadline=None, database=None)
    @given(header=HEADERS, seed=PAYLOADS.filter(bool), size=sizes)
    def check(header, seed, size):
        payload = (seed * (size // len(seed) + 1))[:size]
        frame = bus.prepare(header, payload)
        got_header, got_payload = decode(frame)
        if size > BLOB_OVER:
            assert got_payload == b"" and got_header["b"].startswith("mcpp:blob:")
            assert len(frame) < 4096  # by reference, not through the channel
        assert {k: v for k, v in got_header.items() if k not in ("b", "n")} == header
        if size > BLOB_OVER:  # what it weighs against --max-queued-size (frames.py)
            assert got_header["n"] == size
        assert bus.payload(got_header, got_payload) == payload
        if size > BLOB_OVER:  # taken once
            try:
                bus.payload(got_header, got_payload)
            except BlobLost:
                pass
            else:
                raise AssertionError("a blob was read twice")

    try:
        check()
    finally:
        bus.redis.close()
    assert redis_server.client().keys("mcpp:blob:*") == []


class Monitor:
    """Redis' MONITOR on its own connection: what commands the proxies sent."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        assert self.sock.recv(5) == b"+OK\r\n"
        self.seen = b""

    def until(self, text: bytes, timeout: float = 5) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"{text!r} not seen: {self.seen[-400:]!r}"
            self.seen += self.sock.recv(65536)
        return self.seen

    def close(self) -> None:
        self.sock.close()


def test_a_made_up_owner_costs_one_publish_and_no_grace(proxy_factory, redis_server):
    proxy = proxy_factory("--redis-url", redis_server.url, "--auth-token", "s3cret", "--",
                          *RAW_SERVER, env=ENV)
    proxy.expect(r"listening on Redis")
    tag = requests.get(proxy.base + "/status", timeout=5,  # /status takes a key too
                       headers={"X-API-Key": "s3cret"}).json()["worker"]["id"]
    made_up = ("zzzzzzzz" if tag != "zzzzzzzz" else "yyyyyyyy") + "0" * 32
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": made_up}
    monitor = Monitor(redis_server.port)
    try:
        refused = requests.post(proxy.base + "/mcp", json=rpc("ping", 1), headers=headers,
                                timeout=5)
        assert refused.status_code == 401  # the token is checked before anything is sent
        started = time.monotonic()
        answer = requests.post(proxy.base + "/mcp", json=rpc("ping", 2), timeout=5,
                               headers={**headers, "Authorization": "Bearer s3cret"})
        took = time.monotonic() - started
        assert answer.status_code == 404, answer.text
        assert took < bus_module.GRACE / 2, took  # its key is missing: no grace to wait out
        seen = monitor.until(b'"GET" "mcpp:worker:' + made_up[:8].encode())
        monitor.sock.settimeout(0.3)
        try:  # whatever else it would send arrives right behind
            while True:
                seen += monitor.sock.recv(65536)
        except TimeoutError:
            pass
    finally:
        monitor.close()
    assert seen.count(b'"PUBLISH" "mcpp:in:' + made_up[:8].encode()) == 1


def test_sessions_of_one_worker_have_names_of_their_own(proxy_factory, redis_server):
    proxy = proxy_factory("--redis-url", redis_server.url, "--", *RAW_SERVER, env=ENV)
    proxy.expect(r"listening on Redis")
    readers = []
    for n in range(3):
        reader, endpoint = open_sse(proxy.base)
        readers.append(reader)
        assert requests.post(endpoint, json=rpc("ping", n), timeout=5).status_code == 202
        assert reader.next_message()["id"] == n
    details = requests.get(proxy.base + "/status", timeout=5).json()["session_details"]
    names = {detail["id"] for detail in details}
    assert len(names) == 3, details
    for name in names:  # the log names each session's child by the same name
        proxy.expect(rf"sse:{name}: started ")
    for reader in readers:
        reader.close()


class _Probed:
    """The bus as the owner watch sees it: a PUBLISH reaches ``readers[tag]`` readers."""

    def __init__(self) -> None:
        self.readers: dict[str, int] = {}

    def publish_frame(self, tag: str, frame: bytes) -> int:
        return self.readers.get(tag, 1)

    def claimed(self, tag: str) -> bool:
        return True


class _Waiting:
    def __init__(self, owner: str, heard: bool = False) -> None:
        self.owner, self.heard, self.seen, self.frames = owner, heard, 0.0, []

    def deliver(self, header: dict, payload: bytes) -> None:
        self.frames.append(header["k"])


def test_the_owner_watch_forgets_a_miss_once_the_owner_answered():
    """One missed probe of owner A, then A answered: a later single miss must not end A's
    new call as gone at once (it gets the whole grace), even while a call to another owner
    keeps the watch busy; and a call its owner confirmed is never probed."""
    from mcp_proxy.server.scaleout.owner_watch import OwnerWatch

    watch = OwnerWatch.__new__(OwnerWatch)
    watch.bus, watch.vanished = _Probed(), {}
    watch.bus.readers["A"] = 0
    watch.calls = {"1": _Waiting("A"), "2": _Waiting("B")}
    watch._check_owners(10.0)
    assert "A" in watch.vanished
    watch.bus.readers["A"] = 1  # A answers call 1, which ends
    watch.calls = {"2": _Waiting("B")}
    watch._check_owners(11.0)
    assert "A" not in watch.vanished
    watch.bus.readers["A"] = 0  # much later, a new call to A meets one missed probe
    fresh, confirmed = _Waiting("A"), _Waiting("C", heard=True)
    watch.calls = {"2": _Waiting("B"), "3": fresh, "4": confirmed}
    watch.bus.readers["C"] = 0  # C's inbox is down, but C confirmed call 4: not probed
    watch._check_owners(100.0)
    assert fresh.frames == [] and "A" in watch.vanished
    watch._check_owners(100.0 + 2.5)  # past the grace: now it is gone
    assert fresh.frames == ["gone"] and confirmed.frames == [] and "C" not in watch.vanished


def test_a_blob_frame_published_back_through_an_outage_is_stored_once(redis_server):
    """An owner's large frame is resent while PUBLISH fails: its payload is stored once, not
    once per attempt (each copy stayed in Redis for BLOB_TTL)."""
    bus = Bus(redis_server.url, on_frame=lambda data: None, on_fatal=lambda exc: None)
    failures, sent = [BusDown("down"), BusDown("down")], []

    def publish_frame(tag: str, frame: bytes) -> int:
        if failures:
            raise failures.pop()
        sent.append(frame)
        return 1

    bus.publish_frame = publish_frame
    try:
        payload = b"x" * (BLOB_OVER + 1)
        assert bus.publish_back("abcdefgh", {"k": "data", "c": "1"}, payload)
        assert len(sent) == 1 and not failures
        [key] = redis_server.client().keys("mcpp:blob:*")
        header, _ = decode(sent[0])
        assert header["b"] == key.decode() and bus.payload(header, b"") == payload
    finally:
        bus.redis.close()
