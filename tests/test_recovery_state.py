"""A recovered remote session gets the client's log level and subscriptions back (issue 22).

End to end: a real remote (servers/levels_server.py, on the official SDK: the session's log
level filters its ``logs`` tool, ``--refuse`` refuses subscriptions, ``--record`` writes what
it got) killed and restarted on the same port while the official SDK client (sdk_driver.py)
holds its session through the real CLI: in client mode over Streamable HTTP, and in server
mode with a ``"url"`` entry over HTTP+SSE. After the recovery the client still gets
``resources/updated`` for what it subscribed before, log lines at its level and none below;
an unsubscribed URI and a subscription the remote refused are not sent again; the new remote
refusing a replayed subscription is one warning and the recovery goes on.

In the test process (gevent, a scripted transport): a random sequence of setLevel, subscribe
and unsubscribe, answered with success or an error in any order, replays what a model says;
the cap; a shared remote's multiplexer keeps the replay to itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gevent
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SERVERS, TESTS, free_port
from mcp_proxy.children.shared_remote import SharedRemote
from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.upstream.remote_link import Upstream
from mcp_proxy.upstream.session_memory import SessionMemory
from mcp_proxy.upstream.watched_remote import StateHook

LEVELS_SERVER = [sys.executable, str(SERVERS / "levels_server.py")]
EXPECTED_LOGS = ["a warning line", "a error line"]


class LevelsRemote:
    """levels_server.py on a port kept across restarts (each run its own --record file)."""

    def __init__(self, tmp_path: Path, transport: str, *extra: str) -> None:
        self.tmp_path, self.transport, self.extra = tmp_path, transport, extra
        self.port = free_port()
        path = "/sse" if transport == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.runs: list[subprocess.Popen] = []
        self.records: list[Path] = []

    def start(self, *refuse: str) -> LevelsRemote:
        record = self.tmp_path / f"record{len(self.runs)}.jsonl"
        args = [*LEVELS_SERVER, self.transport, *self.extra, "--port", str(self.port),
                "--record", str(record),
                *(arg for prefix in refuse for arg in ("--refuse", prefix))]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        self.runs.append(proc)
        self.records.append(record)
        line = b""
        deadline = time.monotonic() + 60
        while b"LISTENING" not in line:  # the SDK server prints it once bound
            assert time.monotonic() < deadline and proc.poll() is None, "no LISTENING"
            line = proc.stderr.readline()
        return self

    def kill(self) -> None:
        os.killpg(self.runs[-1].pid, signal.SIGKILL)
        self.runs[-1].wait(10)

    def got(self, run: int) -> list[tuple[str, str]]:
        path = self.records[run]
        lines = path.read_text().splitlines() if path.exists() else []
        return [(item["method"], item["value"]) for item in map(json.loads, lines)]

    def stop(self) -> None:
        for proc in self.runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _steps(lost: Path, back: Path) -> list[dict]:
    touch = [{"op": "call", "name": "touch", "args": {"uri": uri}}
             for uri in ("memo://a", "memo://b", "memo://c")]
    return [
        {"op": "set_level", "level": "warning"},
        {"op": "subscribe", "uri": "memo://a"},
        {"op": "subscribe", "uri": "memo://b"},
        {"op": "subscribe", "uri": "memo://c"},
        {"op": "unsubscribe", "uri": "memo://c"},
        {"op": "subscribe", "uri": "never://x"},  # refused by the first remote
        *touch, {"op": "call", "name": "logs"},
        {"op": "observed", "expect": ["memo://a", "memo://b", *EXPECTED_LOGS]},
        {"op": "mark", "path": str(lost)},
        {"op": "await", "path": str(back), "seconds": 90},
        {"op": "call", "name": "subscribed", "retry": 60},
        *touch, {"op": "call", "name": "logs"},
        {"op": "observed", "expect": ["memo://a", *EXPECTED_LOGS], "settle": 1.0},
    ]


def _run(tmp_path: Path, remote: LevelsRemote, transport: str, target: str,
         steps=_steps, replayed: bool = True, extra: tuple = ()) -> dict:
    """Drive the steps, killing the remote at the mark and restarting it (refusing memo://b)
    on its port; the driver goes on once the new remote got the replayed memo://a (or at
    once, when nothing is ``replayed``)."""
    lost, back = tmp_path / "lost", tmp_path / "back"
    script = tmp_path / "script.json"
    script.write_text(json.dumps(steps(lost, back)))
    driver = subprocess.Popen(
        [sys.executable, str(TESTS / "sdk_driver.py"), "--transport", transport, "--target",
         target, "--timeout", "120", "--script", str(script), *extra, "script"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not lost.exists():
            assert time.monotonic() < deadline and driver.poll() is None, \
                driver.communicate(timeout=10)[1].decode(errors="replace")[-4000:]
            time.sleep(0.05)
        remote.kill()
        remote.start("memo://b")
        deadline = time.monotonic() + 60
        while replayed and ("resources/subscribe", "memo://a") not in remote.got(1):
            assert time.monotonic() < deadline, remote.got(1)
            time.sleep(0.05)
        back.write_text("back")
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)
    assert driver.returncode == 0, err.decode(errors="replace")[-4000:]
    return {"steps": json.loads(out)["script"], "stderr": err.decode(errors="replace")}


def _check(remote: LevelsRemote, steps: list, stderr: str) -> None:
    assert steps[:6] == ["set", "subscribed", "subscribed", "subscribed", "unsubscribed",
                         steps[5]] and "error" in steps[5], steps[:6]
    assert steps[10] == {"updated": ["memo://a", "memo://b"], "logs": EXPECTED_LOGS}
    # the new remote got the level and what is still subscribed: memo://c was unsubscribed,
    # never://x refused; it refused memo://b (a warning), and the recovery went on
    got = remote.got(1)  # the level first; the subscriptions may go several at once
    assert got[0] == ("logging/setLevel", "warning")
    assert sorted(got[1:]) == [("resources/subscribe", "memo://a"),
                               ("resources/subscribe", "memo://b")]
    assert steps[13] == {"text": '["memo://a"]', "isError": False}
    assert steps[-1] == {"updated": ["memo://a"], "logs": EXPECTED_LOGS}
    assert "refused resources/subscribe 'memo://b'" in stderr
    assert "Traceback" not in stderr


def test_client_mode_gets_its_level_and_subscriptions_back(tmp_path):
    remote = LevelsRemote(tmp_path, "streamable-http").start("never://")
    try:
        command = f"{sys.executable} -m mcp_proxy --transport streamablehttp {remote.url}"
        seen = _run(tmp_path, remote, "stdio", command)
        _check(remote, seen["steps"], seen["stderr"])
        assert "re-initialized" in seen["stderr"]
    finally:
        remote.stop()


def test_server_mode_url_entry_gets_them_back(proxy_factory, tmp_path):
    remote = LevelsRemote(tmp_path, "sse").start("never://")
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"far": {"url": remote.url,
                                                         "transport": "sse"}}}))
    front = proxy_factory("--named-server-config", str(config))
    try:
        seen = _run(tmp_path, remote, "streamable", f"{front.base}/servers/far/mcp")
        _check(remote, seen["steps"], front.stderr())
        front.expect("re-initialized")
        assert requests.get(front.base + "/status", timeout=10).status_code == 200
    finally:
        remote.stop()


def _listen_steps(lost: Path, back: Path) -> list[dict]:
    touch = {"op": "call", "name": "touch", "args": {"uri": "memo://a"}}
    return [
        {"op": "subscribe", "uri": "memo://a"},  # held by the bridge's subscriptions/listen
        touch, {"op": "observed", "expect": ["memo://a"]},
        {"op": "mark", "path": str(lost)},
        {"op": "await", "path": str(back), "seconds": 90},
        {"op": "call", "name": "echo", "args": {"text": "back"}, "retry": 60},
        # the reopened listen tells what may have changed while none was open
        {"op": "observed", "expect": ["memo://a"]},
        {"op": "changed", "seen": 1},
        {"op": "call_until", "name": "touch", "args": {"uri": "memo://a"},
         "expect": ["memo://a"], "seconds": 30},
    ]


def test_a_modern_remote_gets_the_listen_again(tmp_path):
    """A 2026-07-28-only remote has no session to recover: the bridge's held listen ends
    with the remote, and is opened again (with backoff) once the remote is back, with the
    URIs the client subscribed to; its acknowledgement tells the client that they, and the
    lists, may have changed meanwhile (resources/updated, list_changed)."""
    remote = LevelsRemote(tmp_path, "streamable-http", "--era", "modern").start()
    try:
        command = f"{sys.executable} -m mcp_proxy --transport streamablehttp {remote.url}"
        seen = _run(tmp_path, remote, "stdio", command, _listen_steps, replayed=False)
    finally:
        remote.stop()
    steps = seen["steps"]
    assert steps[2]["updated"] == ["memo://a"] and steps[5]["text"] == "back", steps
    assert steps[6] == {"updated": ["memo://a"], "logs": []}, steps  # the catch-up
    assert steps[7] == 1, steps  # tools/list_changed, once
    assert steps[8]["updated"] == ["memo://a"], steps  # the listen holds memo://a again
    assert seen["stderr"].count("listening to the remote for") >= 2
    assert "Traceback" not in seen["stderr"]


def _modern_client_steps(lost: Path, back: Path) -> list[dict]:
    logs = {"op": "call", "name": "logs"}
    return [
        {"op": "listen_open", "uris": ["memo://a"]},  # the bridge subscribes on the remote
        {"op": "call", "name": "touch", "args": {"uri": "memo://a"}},
        {"op": "listen_next"}, logs, {"op": "observed", "expect": ["a debug line"]},
        {"op": "mark", "path": str(lost)},
        {"op": "await", "path": str(back), "seconds": 90},
        {"op": "call", "name": "subscribed", "retry": 60},
        {"op": "call", "name": "touch", "args": {"uri": "memo://a"}},
        {"op": "listen_next"}, logs, {"op": "observed", "expect": ["a debug line"]},
    ]


def test_a_modern_client_keeps_its_listen_over_a_legacy_remote(tmp_path):
    """The reverse bridge (a 2026-07-28 client, a 2025-era remote): the listen the client
    holds is the remote's resources/subscribe, and every request's logLevel its
    logging/setLevel; a recovered remote session gets both again, from the link."""
    remote = LevelsRemote(tmp_path, "streamable-http", "--era", "legacy").start()
    try:
        command = f"{sys.executable} -m mcp_proxy --transport streamablehttp {remote.url}"
        seen = _run(tmp_path, remote, "stdio", command, _modern_client_steps,
                    extra=("--mode", "2026-07-28"))
    finally:
        remote.stop()
    steps = seen["steps"]
    updated = {"event": steps[2]["event"], "uri": "memo://a"}
    assert steps[2] == updated and steps[9] == updated, steps
    assert steps[7] == {"text": '["memo://a"]', "isError": False}, steps
    everything = ["a debug line", "a info line", "a notice line", *EXPECTED_LOGS]
    assert steps[4]["logs"] == steps[11]["logs"] == everything, steps
    assert remote.got(1)[0] == ("logging/setLevel", "debug")
    assert "Traceback" not in seen["stderr"]


# -- in the test process: a scripted transport -------------------------------------------------

class Scripted(Upstream):
    """A remote link whose remote answers at once or later, with success or an error as
    told (``answers``: id -> ok); what it was sent, in order, in ``posted``."""

    def __init__(self) -> None:
        super().__init__(ClientSettings(url="http://127.0.0.1:9/mcp", connect_timeout=1,
                                        read_timeout=1, recovery_timeout=5), None, "scripted")
        self.posted: list[Message] = []
        self.held: list[Message] = []
        self.refuse: set[str] = set()
        self.auto = False  # answer every request at once, with success

    def _post(self, message: Message) -> None:
        self.posted.append(message)
        if message.kind != jsonrpc.REQUEST:
            return
        if self.auto or message.method == "initialize" or isinstance(message.id, str):
            refused = message.params.get("uri") in self.refuse
            self.deliver_remote(jsonrpc.error_message(message.id, -32602, "refused here")
                                if refused else jsonrpc.result_message(message.id, {}))
        else:
            self.held.append(message)  # the test answers it

    def answer(self, message: Message, ok: bool) -> None:
        self.deliver_remote(jsonrpc.result_message(message.id, {}) if ok else
                            jsonrpc.error_message(message.id, -32602, "no"))

    def recover(self) -> list[Message]:
        """Lose the session and recover it: the requests of ours the recovery sent."""
        start = len(self.posted)
        self.lost("test")
        assert self.ready.wait(10) and not self.closed.is_set()
        return [m for m in self.posted[start:] if m.method != "initialize"
                and m.kind == jsonrpc.REQUEST]


def _opened() -> Scripted:
    link = Scripted()
    delivered: list[Message] = []
    link.attach(delivered.append, lambda: None)
    link.ready.set()
    link.send(Message({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
    link.delivered = delivered  # type: ignore[attr-defined]
    return link


OPS = st.tuples(st.sampled_from(["logging/setLevel", "resources/subscribe",
                                 "resources/unsubscribe"]),
                st.sampled_from(["u1", "u2", "u3", None]),  # None: a malformed request
                st.booleans(),  # answered with success
                st.booleans())  # answered now (else at the end, in the drawn order)


@settings(max_examples=200, deadline=None, database=None)
@given(ops=st.lists(OPS, max_size=25), data=st.data())
def test_the_replayed_state_is_the_models(ops, data):
    link = _opened()
    level_order, level, uris = -1, None, {}  # the model: uri -> order of its subscribe
    late: list[tuple[Message, bool]] = []
    answers: list[tuple[Message, bool]] = []
    unsubscribed_at: dict[str, int] = {}
    sent: dict[int, tuple] = {}
    with gevent.Timeout(20):
        for number, (method, value, ok, now) in enumerate(ops, start=1):
            key = "level" if method == "logging/setLevel" else "uri"
            params = {key: value} if value is not None else {key: 7}
            link.send(Message({"jsonrpc": "2.0", "id": number, "method": method,
                               "params": params}))
            sent[number] = (method, value)
            if method == "resources/unsubscribe" and value is not None:
                unsubscribed_at[value] = number
            answers.append((link.held.pop(), ok))
            if now:
                link.answer(*answers[-1])
            else:
                late.append(answers[-1])
        for index in data.draw(st.permutations(range(len(late)))):
            link.answer(*late[index])
        for message, ok in answers:  # the model: whatever the order of the answers
            method, value = sent[message.id]
            if not ok or value is None or method == "resources/unsubscribe":
                continue
            if method == "logging/setLevel" and message.id > level_order:
                level_order, level = message.id, value
            elif method == "resources/subscribe" \
                    and unsubscribed_at.get(value, 0) < message.id:
                uris[value] = message.id
        replayed = link.recover()
    expected = [("logging/setLevel", level)] if level is not None else []
    got = [(m.method, m.params.get("level", m.params.get("uri"))) for m in replayed]
    assert got[:len(expected)] == expected
    assert sorted(got[len(expected):]) == sorted(("resources/subscribe", u) for u in uris)
    assert all(isinstance(m.id, str) for m in replayed)
    # none of their answers reached the client: only the answers to its own requests
    assert sorted(m.id for m in link.delivered) == sorted([0, *sent])
    link.close("test over")


def test_a_refused_replay_is_one_warning_and_the_recovery_goes_on(caplog):
    link = _opened()
    with gevent.Timeout(20):
        for number, uri in enumerate(["memo://a", "memo://b"], start=1):
            link.send(Message({"jsonrpc": "2.0", "id": number, "method": "resources/subscribe",
                               "params": {"uri": uri}}))
            link.answer(link.held.pop(), True)
        link.refuse = {"memo://a"}
        with caplog.at_level(logging.WARNING):
            replayed = link.recover()
    assert [m.params["uri"] for m in replayed] == ["memo://a", "memo://b"]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == ["scripted: the recovered remote session refused resources/subscribe "
                       "'memo://a': {'code': -32602, 'message': 'refused here'}"]
    link.close("test over")


def test_a_request_the_loss_failed_does_not_count():
    link = _opened()
    with gevent.Timeout(20):
        link.send(Message({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                           "params": {"uri": "memo://a"}}))
        in_flight = link.held.pop()
        assert link.recover() == []  # answered with an error by the loss: not replayed
        link.answer(in_flight, True)  # its late success is dropped, and does not count
        assert link.recover() == []
    link.close("test over")


def test_the_remembered_uris_are_capped(caplog):
    memory = SessionMemory("capped", max_uris=2)
    with caplog.at_level(logging.WARNING):
        for number, uri in enumerate(["a", "b", "c", "d"]):
            memory.sent((False, number), "resources/subscribe", {"uri": uri})
            memory.answered((False, number), True)
    assert list(memory.uris) == ["a", "b"]
    assert len([r for r in caplog.records if "more than 2" in r.getMessage()]) == 1


class WatchedScripted(StateHook, Scripted):
    """The scripted link as server mode's remote servers have it: it tells its holder."""


def test_a_shared_remote_sends_them_again_once():
    link = WatchedScripted()
    link.auto = True
    link.ready.set()
    mux = SharedRemote("shared:far", lambda: link)
    port = mux.port("client")
    answers: list[Message] = []
    port.attach(answers.append, lambda: None)
    try:
        with gevent.Timeout(20):
            for number, (method, params) in enumerate([
                    ("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "0"}}),
                    ("logging/setLevel", {"level": "debug"}),
                    ("resources/subscribe", {"uri": "memo://a"})], start=1):
                port.send(Message({"jsonrpc": "2.0", "id": number, "method": method,
                                   "params": params}))
            while len(answers) < 3 or len([m for m in link.posted if m.method in (
                    "logging/setLevel", "resources/subscribe")]) < 2:  # the level: in the
                gevent.sleep(0.02)  # multiplexer's background
            assert link.memory is None  # the multiplexer replays them, from its bookkeeping
            start = len(link.posted)
            link.lost("test")
            assert link.ready.wait(10)

            def again() -> list:
                return [m.method for m in link.posted[start:] if m.kind == jsonrpc.REQUEST
                        and m.method != "initialize"]

            while len(again()) < 2:
                gevent.sleep(0.02)
            gevent.sleep(0.3)  # a second copy would have come by now
        assert sorted(again()) == ["logging/setLevel", "resources/subscribe"]
    finally:
        mux.close("test over")
