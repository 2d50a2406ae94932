"""Unit tests of the link layer: bridge() with in-memory links, StdioChild with a real child.

These run gevent objects in the test process without monkey-patching (gevent's own
subprocess and queues need none).
"""

from __future__ import annotations

import json

import gevent
import pytest

from conftest import RAW_SERVER
from mcp_proxy.children.process import StdioChild
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.link import Link, bridge
from mcp_proxy.errors import LinkClosed, SpawnError


class MemoryLink(Link):
    """A link whose peer is the test: ``sent`` is what the bridge gave it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent: list[jsonrpc.Message] = []

    def send(self, message: jsonrpc.Message) -> None:
        if self.closed.is_set():
            raise LinkClosed(self.name)
        self.sent.append(message)


def msg(**obj) -> jsonrpc.Message:
    return jsonrpc.Message({"jsonrpc": "2.0", **obj})


def settle() -> None:
    gevent.sleep(0.01)


def test_messages_waiting_before_the_bridge_go_first():
    down, up = MemoryLink("down"), MemoryLink("up")
    early = msg(id=1, method="initialize")
    down.deliver(early)
    bridge(down, up)
    assert up.sent == [early]


def test_bridge_relays_both_ways_untouched():
    down, up = MemoryLink("down"), MemoryLink("up")
    bridge(down, up)
    request = msg(id="7", method="tools/call", params={"x": 1})
    down.deliver(request)
    up.deliver(msg(method="notifications/progress", params={"progressToken": 1}))
    up.deliver(msg(id="7", result={}))
    settle()
    assert up.sent == [request]
    assert [m.obj for m in down.sent] == [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1}},
        {"jsonrpc": "2.0", "id": "7", "result": {}}]


def test_upstream_closing_answers_every_pending_request():
    down, up = MemoryLink("down"), MemoryLink("up")
    bridge(down, up)
    for request_id in (1, "1", 2):
        down.deliver(msg(id=request_id, method="slow"))
    settle()
    up.deliver(msg(id=2, result={}))
    down.deliver(msg(method="notifications/cancelled", params={"requestId": "1"}))
    settle()
    up.close("server process exited with code 3")
    assert down.ended.wait(5) and up.ended.wait(5)
    errors = [m.obj for m in down.sent if "error" in m.obj]
    assert [e["id"] for e in errors] == [1]  # 2 was answered, "1" was cancelled
    assert "exited with code 3" in errors[0]["error"]["message"]
    assert down.closed.is_set()


def test_client_leaving_closes_the_server_side():
    down, up = MemoryLink("down"), MemoryLink("up")
    bridge(down, up)
    down.close("client disconnected")
    assert down.ended.wait(5) and up.ended.wait(5)
    assert up.closed.is_set() and up.close_reason == "client disconnected"


class BrokenLink(MemoryLink):
    def send(self, message: jsonrpc.Message) -> None:
        raise LinkClosed("stdin of the server is gone")


def test_sending_to_a_closed_server_answers_at_once():
    down, up = MemoryLink("down"), BrokenLink("up")
    bridge(down, up)
    down.deliver(msg(id=5, method="ping"))
    settle()
    assert down.sent[0].obj["error"]["code"] == jsonrpc.CONNECTION_CLOSED


def spawn(*args: str, max_frame: int = 1 << 20) -> StdioChild:
    return StdioChild(ServerSpec(RAW_SERVER[0], [*RAW_SERVER[1:], *args]), "t", max_frame,
                      stop_grace=0.5)


def receive(child: StdioChild, timeout: float = 10) -> jsonrpc.Message:
    with gevent.Timeout(timeout):
        return next(iter(child))


def test_child_round_trip_and_exit_reason():
    child = spawn("--exit-after", "2")
    child.send(msg(id=1, method="ping"))
    assert receive(child).obj == {"jsonrpc": "2.0", "id": 1, "result": {}}
    child.send(msg(id=2, method="ping"))
    child.closed.wait(10)
    assert child.close_reason == "server process exited with code 5"
    with pytest.raises(LinkClosed):
        child.send(msg(id=3, method="ping"))


def test_oversize_frame_is_dropped_and_the_session_goes_on():
    child = spawn("--huge-line", "5000", max_frame=4096)
    child.send(msg(id=1, method="tools/call", params={"name": "echo",
                                                       "arguments": {"text": "hi"}}))
    answer = receive(child)
    assert answer.id == 1 and answer.obj["result"]["content"][0]["text"] == "hi"
    child.close("test over")


# A child that writes its stdout in the pieces given (a file: JSON list of latin-1 strings),
# then exits: lines split across reads, several per read, odd whitespace, oversize, no final
# newline.
PIECES = ("import json, os, sys\n"
          "for piece in json.load(open(sys.argv[1])):\n"
          "    os.write(1, piece.encode('latin-1'))\n")


def _pieces_child(tmp_path, pieces: list) -> tuple[StdioChild, list]:
    """A child writing ``pieces`` (frame cap 650,000 bytes), and every message it gave."""
    script = tmp_path / "pieces.json"
    script.write_text(json.dumps(pieces))
    child = StdioChild(ServerSpec(RAW_SERVER[0], ["-c", PIECES, str(script)]), "t", 650_000,
                       stop_grace=0.5)
    with gevent.Timeout(10):
        return child, list(child)


def _line(request_id, text: str = "") -> str:
    return f'{{"jsonrpc":"2.0","id":{request_id},"result":{{"t":"{text}"}}}}'


def test_child_stdout_framing_across_reads(tmp_path):
    big = "y" * 600_000  # longer than one read of the pipe
    fifth = _line(5, "split")
    pieces = [
        _line(1) + "\n" + _line(2)[:10], _line(2)[10:] + "\r\n  \n\n",
        _line(3, big)[:70_000], _line(3, big)[70_000:] + "\n",
        _line(4, "z" * 700_000) + "\n",  # over the cap: dropped, answered with an error
        '{"jsonrpc":"2.0","method":"m","params":{"t":"' + "w" * 700_000 + '"}}\n',  # dropped
        "not json\n" + fifth[:20], "", fifth[20:] + "\n", _line(6),  # the last: no newline
    ]
    child, got = _pieces_child(tmp_path, pieces)
    assert [m.id for m in got] == [1, 2, 3, 4, 5, 6]
    assert got[1].raw == _line(2).encode()  # the CR went, the blank lines gave nothing
    assert got[2].raw == _line(3, big).encode()
    assert got[3].error["code"] == jsonrpc.INTERNAL_ERROR
    assert "exceeds the proxy's frame cap of 650000 bytes" in got[3].error["message"]
    assert got[4].obj["result"]["t"] == "split" and got[5].raw == _line(6).encode()
    assert child.closed.wait(10)
    assert child.close_reason == "server process exited with code 0"


def test_stop_escalates_to_sigkill():
    child = spawn("--ignore-stdin-eof")
    child.send(msg(id=1, method="ping"))
    receive(child)
    child.close("test over")
    assert child.stopped.wait(10)
    assert child.process.returncode == -9


def test_missing_command_is_a_spawn_error():
    with pytest.raises(SpawnError):
        StdioChild(ServerSpec("/nonexistent/server"), "t", 1024)


def test_streamable_routing():
    from mcp_proxy.config.settings import ServerSettings
    from mcp_proxy.server.sessions import Registry
    from mcp_proxy.server.streamable_session import StreamableSession

    session = StreamableSession(Registry(ServerSettings(servers={})), "")
    session.send(msg(method="notifications/tools/list_changed"))  # nothing open: kept
    stream = session.open_request(msg(id=1, method="tools/call",
                                      params={"_meta": {"progressToken": "p"}}))
    other = session.open_request(msg(id=2, method="tools/call"))
    session.send(msg(method="notifications/progress", params={"progressToken": "p"}))
    session.send(msg(method="notifications/message", params={"data": "log"}))
    session.send(msg(id=0, method="sampling/createMessage"))  # no GET stream: a request's
    session.get_open = True
    session.send(msg(id=1, method="roots/list"))  # GET stream open: there
    session.send(msg(id=2, result={}))
    session.send(msg(id=1, result={}))
    session.send(msg(id=9, result={}))  # nobody asked: dropped, logged

    def drain(s):
        seen = []
        while True:
            try:
                item = s.read(0.01)
            except Exception:
                return seen
            if item is None:
                return seen
            seen.append(item.method or item.id)

    assert drain(stream) == ["notifications/progress", "notifications/message",
                             "sampling/createMessage", 1]
    assert drain(other) == [2]
    assert drain(session.unsolicited) == ["notifications/tools/list_changed", "roots/list"]
    assert session.requests == {} and session.progress == {}


def test_an_oversize_answer_fails_only_the_request_whose_id_is_sure(tmp_path):
    """The id an oversize answer is failed under is its top-level one: first (after jsonrpc),
    or last when the answer starts with its result (the TypeScript SDK's order). An id it
    echoes inside its result (a client's {"id": 3}) must not fail another client's request."""
    pad = "p" * 700_000
    pieces = [
        # the result echoes {"id":3} first; the real id (7) stands last, split across reads
        '{"result":{"structuredContent":{"id":3},"t":"' + pad[:300_000], pad[300_000:]
        + '"},"jsonrpc":"2.0","id":7}\n',
        # an echoed id first, and no sure id at all: nobody's request fails
        '{"result":{"id":4,"t":"' + pad + '"}}\n',
        # a server request with an id: not an answer, never turned into one
        '{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{"t":"' + pad
        + '"}}\n',
        '{"jsonrpc":"2.0","method":"m","params":{"t":"' + pad + '"},"id":10}\n',
        _line(5, "after") + "\n",
    ]
    child, got = _pieces_child(tmp_path, pieces)
    assert [m.id for m in got] == [7, 5]
    assert "exceeds the proxy's frame cap" in got[0].error["message"]


def test_greenlets_skip_the_spawning_tree_unless_asked(monkeypatch):
    """The proxy's greenlets skip gevent's spawning-tree record (its cost is a stack walk per
    greenlet); GEVENT_TRACK_GREENLET_TREE, set, keeps gevent's own choice."""
    from mcp_proxy.core import greenlets

    monkeypatch.setattr(gevent.config, "track_greenlet_tree", True)
    monkeypatch.setenv("GEVENT_TRACK_GREENLET_TREE", "1")
    greenlets.untracked()
    assert gevent.config.track_greenlet_tree is True
    monkeypatch.delenv("GEVENT_TRACK_GREENLET_TREE")
    greenlets.untracked()
    assert gevent.config.track_greenlet_tree is False
    assert gevent.spawn(lambda: None).spawning_stack is None
