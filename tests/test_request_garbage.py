"""A request leaves no reference cycle behind: its objects go when its answer does.

An object on a cycle outlives its last use until the garbage collector's next pass, and
those passes (which walk every young object) cost a 2026-07-28 request more than the rest of
its difference to a 2025-era session's (bench/README.md, "Era bridges"). Here the real app
serves requests in this process, over a real child, with the collector off; then a collection
that keeps what it finds shows whether any of the proxy's own request objects were on a
cycle. (Werkzeug's URL matcher makes one cycle of its own per request: not ours, not counted.)
"""

from __future__ import annotations

import gc
import json

import pytest

from conftest import RAW_SERVER
from mcp_proxy.config.flag_settings import server_settings
from mcp_proxy.config.options import build_parser
from mcp_proxy.server.app import create_app
from mcp_proxy.server.response_body import Body
from mcp_proxy.server.streams import Stream, StreamOwner

MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "garbage-test", "version": "1"}}
HEADERS = {"Accept": "application/json, text/event-stream",
           "Content-Type": "application/json"}


@pytest.fixture(params=["dual", "--legacy-only", "--modern-only", "--stateless"])
def app(request):
    """Over the dual-era server (the 2026-07-28 lane, a 2025 session), a 2025-only one (the
    modern->legacy bridge), a 2026-07-28-only one (the legacy->modern bridge), and stateless."""
    flags = ["--stateless"] if request.param == "--stateless" else []
    server = [] if request.param in ("dual", "--stateless") else [request.param]
    app = create_app(server_settings(build_parser().parse_args(
        ["--port", "0", *flags, "--", *RAW_SERVER, *server])), reload_on_hangup=False)
    app.stateless = bool(flags)
    yield app
    app.extensions["mcp_proxy"].close_all("test over", 5)


def _ours(objects) -> list[str]:
    """The proxy's own objects among ``objects`` (Werkzeug's matcher cells are not)."""
    names = []
    for obj in objects:
        module = getattr(type(obj), "__module__", "") or ""
        if module.startswith("mcp_proxy"):
            names.append(type(obj).__qualname__)
    return sorted(set(names))


def _garbage_of(serve, count: int) -> list[str]:
    serve(0)  # the first starts the child and lists the tools: not what is measured
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(1, count + 1):
            serve(n)
        gc.collect()
        return _ours(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_a_2026_07_28_request_leaves_no_cycle(app):
    client = app.test_client()

    def serve(n: int) -> None:
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": f"call {n}"}, "_meta": ENVELOPE}}
        answer = client.post("/mcp", data=json.dumps(body), headers={
            **HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
            "Mcp-Name": "echo"})
        assert answer.status_code == 200, answer.data
        assert answer.get_json()["result"]["content"][0]["text"] == f"call {n}"

    assert _garbage_of(serve, 20) == []


def test_a_2025_session_request_leaves_no_cycle(app):
    client = app.test_client()
    if app.stateless:
        def serve(n: int) -> None:
            answer = client.post("/mcp", headers=HEADERS, data=json.dumps({
                "jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": f"call {n}"}}}))
            assert answer.status_code == 200, answer.data

        assert _garbage_of(serve, 20) == []
        return
    opened = client.post("/mcp", headers=HEADERS, data=json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "garbage-test", "version": "1"}}}))
    assert opened.status_code == 200, opened.data
    session = {**HEADERS, "Mcp-Session-Id": opened.headers["Mcp-Session-Id"],
               "MCP-Protocol-Version": "2025-06-18"}

    def serve(n: int) -> None:
        answer = client.post("/mcp", headers=session, data=json.dumps({
            "jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"call {n}"}}}))
        assert answer.status_code == 200, answer.data

    assert _garbage_of(serve, 20) == []


def test_a_client_mode_answer_leaves_no_cycle():
    """Client mode reads each POST's answer into a RawResponse: one per message."""
    from test_client_posts import answer_to

    def serve(n: int) -> None:
        answer, released = answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert answer.raw.read1() == b"ok"
        answer.close()
        answer._sock.close()
        assert released == [True]

    assert _garbage_of(serve, 5) == []


def test_a_stream_disowned_while_its_response_drains_leaves_its_owners_set():
    """Its owner closed first (a session's DELETE during a long answer): the response's end
    still takes the stream out of the owner's set, which the reaper's stall check reads."""
    owner = StreamOwner()
    owner.draining = set()
    stream = Stream(owner)
    body = Body(iter([b"data: {}\n\n"]), {}, stream, on_gone=lambda: None,
                cleanup=lambda: None)
    assert owner.draining == {stream}
    stream.disown()
    assert list(body) == [b"data: {}\n\n"]
    body.close()
    assert owner.draining == set() and stream.writing_since is None
