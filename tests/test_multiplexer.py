"""The shared child in the test process: real children, gevent without patching.

Shutdown races and leaks that the end-to-end tests cannot time: ``close()`` arriving while a
child is being spawned or initialized, and a request of the proxy's own that cannot be sent;
and, generated, the books the multiplexer keeps while clients call and cancel.
"""

from __future__ import annotations

import sys

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RAW_SERVER
from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.children.process import StdioChild
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.errors import ServerBusy, SpawnError


def raw_child(*args: str, **options) -> StdioChild:
    return StdioChild(ServerSpec(RAW_SERVER[0], [*RAW_SERVER[1:], *args]), "t", 1 << 20,
                      stop_grace=0.5, **options)


class Spawner:
    """The multiplexer's spawn function: counts the children it starts, keeps them."""

    def __init__(self, *args: str, before_return=None) -> None:
        self.args = args
        self.children: list[StdioChild] = []
        self.before_return = before_return

    def __call__(self) -> StdioChild:
        child = raw_child(*self.args)
        self.children.append(child)
        if self.before_return is not None:
            self.before_return()
        return child

    def stop(self) -> None:
        for child in self.children:
            child.close("test over")
            assert child.stopped.wait(10)


def test_close_during_the_handshake_leaves_it_stopped_for_good():
    spawner = Spawner("--slow", "2")  # the initialize answer takes 2 s
    mux = Multiplexer("m", spawner)
    starting = gevent.spawn(mux.ensure_started)
    with gevent.Timeout(10):
        while not spawner.children:
            gevent.sleep(0.01)
    mux.close("the proxy is stopping")
    with pytest.raises(SpawnError):
        starting.get(timeout=10)
    assert mux.state == "stopped"
    with pytest.raises(SpawnError, match="shutting down"):
        mux.ensure_started()  # no child after stop_all
    assert len(spawner.children) == 1
    spawner.stop()


def test_close_during_the_spawn_stops_the_new_child():
    mux = Multiplexer("m", Spawner())  # close() comes while the process starts
    mux._spawn.before_return = lambda: mux.close("the proxy is stopping")
    with pytest.raises(SpawnError, match="shutting down"), gevent.Timeout(10):
        mux.ensure_started()
    assert mux.state == "stopped"
    [child] = mux._spawn.children
    assert child.stopped.wait(10)  # not left running after stop_all


def test_a_request_that_cannot_be_sent_leaves_no_call_behind():
    code = "import time; time.sleep(60)"  # reads nothing: its stdin fills up
    child = StdioChild(ServerSpec(sys.executable, ["-c", code]), "t", 1 << 20,
                       stop_grace=0.5, write_timeout=0.3)
    mux = Multiplexer("m", lambda: child)
    mux.child = child
    child.send(Message({"jsonrpc": "2.0", "method": "x", "params": {"pad": "x" * (4 << 20)}}))
    with pytest.raises(ServerBusy), gevent.Timeout(10):
        mux._request("ping", {}, 5)
    assert mux.sharing.calls == {}
    child.close("test over")


CALLS = ("echo", "late", "hold")  # answered, answered after a while, never answered
OPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(
    (*CALLS, "cancel own", "cancel another's", "cancel unknown"))), min_size=1, max_size=14)


def call(request_id, tool: str, text: str) -> Message:
    arguments = {"echo": {"text": text}, "late": {"seconds": 0.02}, "hold": {}}[tool]
    return Message({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments}})


def cancel(request_id) -> Message:
    return Message({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": request_id}})


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(clients=st.integers(2, 3), ops=OPS, string_ids=st.booleans())
def test_calls_and_cancels_keep_the_books_of_a_shared_child(clients, ops, string_ids):
    """Each client gets exactly the answers to its own requests that it did not cancel, and
    once the child is quiet only the unanswered, uncancelled requests are in flight."""
    spawner = Spawner()
    mux = Multiplexer("m", spawner)
    mux.ensure_started()
    ports = [mux.port(f"c{n}") for n in range(clients)]
    sent: dict = {port: {} for port in ports}  # id_key -> (id, tool, text)
    cancelled: dict = {port: set() for port in ports}
    for who, op in ops:  # no yield in here: every cancel reaches the proxy before an answer
        port = ports[who % clients]
        if op in CALLS:
            number = len(sent[port]) + 1  # the clients' ids collide on purpose
            request_id = str(number) if string_ids and number % 2 else number
            sent[port][id_key(request_id)] = (request_id, op, f"{port.name}:{number}")
            port.send(call(request_id, op, f"{port.name}:{number}"))
            continue
        owner = port if op == "cancel own" else ports[(who + 1) % clients]
        targets = [request_id for request_id, _, _ in sent[owner].values()]
        target = targets[-1] if targets and op != "cancel unknown" else "nobody's"
        if id_key(target) in sent[port]:
            cancelled[port].add(id_key(target))  # a cancel counts for its own client only
        port.send(cancel(target))
    for port in ports:
        port.send(call("barrier", "echo", "barrier"))
    with gevent.Timeout(20):
        for port in ports:
            answers: dict = {}
            for message in port:
                assert message.method is None and "result" in message.obj, message.obj
                if message.id == "barrier":
                    break
                key = id_key(message.id)
                assert key in sent[port] and key not in answers, (port.name, message.obj)
                answers[key] = message.obj["result"]["content"][0]["text"]
            expected = {key: "late" if tool == "late" else text
                        for key, (_, tool, text) in sent[port].items()
                        if tool != "hold" and key not in cancelled[port]}
            assert answers == expected, port.name
            holding = {key for key, (_, tool, _) in sent[port].items()
                       if tool == "hold" and key not in cancelled[port]}
            assert set(port.inflight) == holding, port.name
    assert set(mux.sharing.calls) == {cid for port in ports for cid in port.inflight.values()}
    mux.close("example over")
    spawner.stop()
