"""The era bridge's listen (bridging/listener.py) against a peer whose listens keep ending or
are refused: it is reopened for as long as the session lasts (one warning when it keeps
ending), and a refused one waits for a new filter. In-process, on a scripted bridge, with the
backoff made short."""

from __future__ import annotations

import logging

import gevent
import pytest

from mcp_proxy.bridging import listener as listener_module
from mcp_proxy.bridging.listener import PATIENT_AFTER, Listener
from mcp_proxy.core import jsonrpc


class Bridge:
    """What a Listener asks of its bridge; each ``leg`` is answered by ``answer(n)``."""

    peer, name = "remote", "scripted"

    def __init__(self, answer) -> None:
        self.answer = answer
        self.discovered = {"capabilities": {"tools": {"listChanged": True}}}
        self.uris: set[str] = set()
        self.legs: list[dict] = []
        self._n = 0

    def next_id(self, kind: str) -> str:
        self._n += 1
        return f"mcp-proxy-{kind}-{self._n}"

    def leg(self, method, params, leg_id=None, timeout=None, here=False):
        self.legs.append(params["notifications"])
        gevent.sleep(0)
        return self.answer(len(self.legs))

    def stop_leg(self, leg_id) -> None:
        pass

    def deliver_unless_closed(self, message) -> None:
        pass


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(listener_module, "backoff", lambda attempt, cap=30.0: 0.001)


def lost(_n):
    return jsonrpc.error_message("x", jsonrpc.INTERNAL_ERROR, "remote connection lost: reset")


def warnings_over(legs: int, caplog) -> list[str]:
    """The warnings while a listen that always ends at once is opened ``legs`` times."""
    bridge = Bridge(lost)
    listen = Listener(bridge)
    with caplog.at_level(logging.WARNING, logger="mcp_proxy.bridging.listener"):
        listen.start()
        with gevent.Timeout(10):
            while len(bridge.legs) < legs:
                gevent.sleep(0.01)
        listen.stop()
    return [r.getMessage() for r in caplog.records]


def test_a_listen_that_keeps_ending_is_reopened_for_the_whole_session(caplog):
    """Before, five short streams ended the listen for good: notifications were lost for the
    rest of the session once the remote had been away for half a minute."""
    assert warnings_over(4 * PATIENT_AFTER, caplog) == [
        "the remote's listen stream keeps ending (remote connection lost: reset); trying "
        "again every 30 s"]


def test_streams_that_each_lived_long_never_warn(monkeypatch, caplog):
    monkeypatch.setattr(listener_module, "SHORT_LIVED", -1.0)  # every stream counts as long
    assert warnings_over(3 * PATIENT_AFTER, caplog) == []


def test_a_refused_listen_waits_for_a_new_filter(caplog):
    def refused(n):
        return jsonrpc.error_message("x", -32601, "Method not found")

    bridge = Bridge(refused)
    listen = Listener(bridge)
    with caplog.at_level(logging.WARNING, logger="mcp_proxy.bridging.listener"):
        listen.start()
        gevent.sleep(0.3)
        assert bridge.legs == [{"toolsListChanged": True}]  # not asked again and again
        bridge.uris.add("memo://a")
        assert listen.refilter()
        with gevent.Timeout(5):
            while len(bridge.legs) < 2:
                gevent.sleep(0.01)
        listen.stop()
    assert bridge.legs[1] == {"toolsListChanged": True, "resourceSubscriptions": ["memo://a"]}
    assert [r.getMessage() for r in caplog.records][0] == (
        "the remote refused the listen (Method not found); no change notifications until the "
        "client's subscriptions change")


@pytest.mark.parametrize("error", [{"code": "-32601", "message": 7}, {"code": [-32601]},
                                   {"message": None}, {}])
def test_a_malformed_error_answer_is_an_ending_not_a_crash(error):
    """A peer's error object with a code of the wrong type, or none, is a listen that ended:
    reopened, and the listener's greenlet lives on."""
    bridge = Bridge(lambda n: jsonrpc.Message({"jsonrpc": "2.0", "id": "x", "error": error}))
    listen = Listener(bridge)
    listen.start()
    with gevent.Timeout(10):
        while len(bridge.legs) < 3:
            gevent.sleep(0.01)
    assert not listen._loop.dead
    listen.stop()
