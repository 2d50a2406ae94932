"""The shared child's life in the test process: real children, gevent without patching.

Shutdown races and leaks that the end-to-end tests cannot time: ``close()`` arriving while a
child is being spawned or initialized, and a request of the proxy's own that cannot be sent.
"""

from __future__ import annotations

import sys

import gevent
import pytest

from conftest import RAW_SERVER
from mcp_proxy.child import StdioChild
from mcp_proxy.errors import ServerBusy, SpawnError
from mcp_proxy.jsonrpc import Message
from mcp_proxy.multiplexer import Multiplexer
from mcp_proxy.settings import ServerSpec


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
    assert mux.calls == {}
    child.close("test over")
