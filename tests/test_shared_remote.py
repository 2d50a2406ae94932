"""Shared remote servers (issue 21): one remote session for every client of a ``"url"`` entry.

End to end: the remote is another mcp-proxy in server mode in front of the SDK server (asking
for a key); the proxy under test serves it ``"shared": true``, to SDK clients over both
transports and to raw clients: the remote sees ONE session (its /status says so), each
client's ids come back as its own, the remote restarted on its port is recovered for every
client; ``--stateless`` serves it too, each POST alone; a combined server whose member is the
shared remote (its tools through the combined server's prefix). In the test process (gevent
without patching): the multiplexer told of the remote's loss and return sends the log level
and the subscriptions again and tells its ports.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
import requests
from test_combined import _answer
from test_combined_remote import TOKEN, Remote
from test_health import wait_for

from conftest import RAW_SERVER, STREAM_HEADERS, rpc, run_driver
from mcp_proxy.children.process import StdioChild
from mcp_proxy.children.shared_remote import SharedRemote
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core.jsonrpc import Message

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def remote_proxy():
    started = Remote()
    yield started
    for proxy in started.proxies:
        proxy.stop()


def _front(proxy_factory, tmp_path, remote: Remote, *args: str):
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {
        "far": {"url": remote.url, "headers": AUTH, "shared": True},
        "kit": {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]},
        "both": {"servers": ["kit", "far"]}}}))
    front = proxy_factory("--named-server-config", str(path), *args, wait=False)
    front.base = front.expect(r"Status at (http://\S+)/status", timeout=120).group(1)
    return front  # (the start-up check of "both" opens its members first: not 15 s)


def _remote_sessions(remote: Remote) -> int:
    return requests.get(f"http://127.0.0.1:{remote.port}/status", headers=AUTH,
                        timeout=10).json()["sessions"]


def _session(url: str) -> dict:
    init = requests.post(url, headers=STREAM_HEADERS, timeout=30, json=rpc(
        "initialize", 0, protocolVersion="2025-06-18", capabilities={},
        clientInfo={"name": "t", "version": "0"}))
    assert init.status_code == 200, init.text
    return {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}


def test_one_remote_session_for_every_client(proxy_factory, tmp_path, remote_proxy):
    remote = remote_proxy
    front = _front(proxy_factory, tmp_path, remote)
    for transport, path in (("streamable", "/mcp"), ("sse", "/sse")):
        seen = run_driver(transport, f"{front.base}/servers/far{path}", "echo", "progress",
                          "sample")
        assert seen["echo"] == "hello", seen
        assert seen["progress"]["result"] == "done" and seen["progress"]["values"] == [1, 2, 3]
        # the proxy initialized the shared session declaring no client capabilities (as a
        # shared child): the remote refuses to ask for sampling, and says why
        assert seen["sample"]["code"] == -32021, seen
    url = front.base + "/servers/far/mcp"
    clients = [_session(url) for _ in range(4)]

    def call(headers: dict) -> str:  # the same id from every client, at once
        answer = _answer(requests.post(url, headers=headers, timeout=30, json=rpc(
            "tools/call", 7, name="echo", arguments={"text": headers["Mcp-Session-Id"]})))
        assert answer["id"] == 7, answer
        return answer["result"]["content"][0]["text"]

    with ThreadPoolExecutor(4) as pool:
        said = list(pool.map(call, clients))
    assert said == [headers["Mcp-Session-Id"] for headers in clients], said
    assert _remote_sessions(remote) == 1  # the remote saw one session for all of them
    status = requests.get(front.base + "/status", timeout=10).json()
    far = status["server_instances"]["far"]
    assert far["mode"] == "shared remote" and far["shared_state"] == "running", far
    assert far["remote"]["remote_sessions"] == 1, far
    detail = [s["child"] for s in status["session_details"] if s["server"] == "far"]
    assert detail and all(d == {"pid": None, "state": "connected", "shared": True,
                                "remote": True} for d in detail), detail

    # the remote restarted on its port: the shared session is recovered for every client
    remote.stop()
    wait_for(lambda: requests.get(front.base + "/status", timeout=10).json()[
        "server_instances"]["far"]["remote"]["state"] == "recovering", "far recovering", 30)
    remote.restart()
    with ThreadPoolExecutor(4) as pool:
        said = list(pool.map(call, clients))
    assert said == [headers["Mcp-Session-Id"] for headers in clients], said
    assert _remote_sessions(remote) == 1
    front.expect(r"shared:far: the shared remote session is back")


def test_a_shared_remote_as_a_member_and_stateless(proxy_factory, tmp_path, remote_proxy):
    remote = remote_proxy
    front = _front(proxy_factory, tmp_path, remote, "--stateless")
    url = front.base + "/servers/far/mcp"
    for number in range(3):  # each POST alone: no session, no initialize
        answer = _answer(requests.post(url, headers=STREAM_HEADERS, timeout=30, json=rpc(
            "tools/call", number, name="echo", arguments={"text": f"alone {number}"})))
        assert answer["result"]["content"][0]["text"] == f"alone {number}", answer
    both = front.base + "/servers/both/mcp"
    answer = _answer(requests.post(both, headers=STREAM_HEADERS, timeout=30, json=rpc(
        "tools/call", 9, name="far__echo", arguments={"text": "through both"})))
    assert answer["result"]["content"][0]["text"] == "through both", answer
    assert _remote_sessions(remote) == 1
    members = requests.get(front.base + "/status", timeout=10).json()["server_instances"][
        "both"]["members"]
    assert members["far"]["kind"] == "shared remote", members
    assert "Traceback" not in front.stderr()


# -- in the test process: the loss and the return, as the remote link tells them -------------

def test_level_and_subscriptions_are_sent_again_when_the_remote_is_back(tmp_path):
    record = tmp_path / "sent.jsonl"
    child = StdioChild(ServerSpec(RAW_SERVER[0], [*RAW_SERVER[1:], "--record", str(record)]),
                       "remote", 1 << 20, stop_grace=0.5)
    mux = SharedRemote("shared:far", lambda: child)
    port = mux.port("client")
    told, answers = [], []
    port.on_child = lambda running, why="": told.append((running, why))
    port.attach(answers.append, lambda: None)

    def sent(method: str) -> int:
        lines = record.read_text().splitlines() if record.exists() else []
        return sum(1 for line in lines if json.loads(line).get("method") == method)

    try:
        with gevent.Timeout(20):
            port.send(Message(rpc("initialize", 1, protocolVersion="2025-06-18",
                                  capabilities={}, clientInfo={"name": "t", "version": "0"})))
            port.send(Message(rpc("logging/setLevel", 2, level="debug")))
            port.send(Message(rpc("resources/subscribe", 3, uri="memo://a")))
            while len(answers) < 3 or sent("resources/subscribe") < 1:
                gevent.sleep(0.02)
            assert sent("logging/setLevel") == 1
            told.clear()  # (the start told it the remote runs)
            child.on_state(False, "remote connection lost: test")
            assert told == [(False, "remote connection lost: test")]
            assert mux.failure == "remote connection lost: test" and mux.state == "running"
            child.on_state(True, "")
            while sent("resources/subscribe") < 2 or sent("logging/setLevel") < 2:
                gevent.sleep(0.02)
            assert told[-1] == (True, "")
            assert sent("initialize") == 1  # the link replays it itself, not the multiplexer
    finally:
        mux.close("test over")
        assert child.stopped.wait(10)


def test_a_stale_link_is_not_heard(tmp_path):
    child = StdioChild(ServerSpec(RAW_SERVER[0], RAW_SERVER[1:]), "remote", 1 << 20,
                       stop_grace=0.5)
    mux = SharedRemote("shared:far", lambda: child)
    port = mux.port("client")
    told = []
    port.on_child = lambda running, why="": told.append(running)
    try:
        with gevent.Timeout(20):
            mux.ensure_started()
        told.clear()
        mux._remote_state(object(), False, "an old link")  # not the child now: ignored
        assert told == [] and mux.failure == ""
    finally:
        mux.close("test over")
        assert child.stopped.wait(10)

