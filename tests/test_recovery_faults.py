"""A recovery that meets a fault while it replays the client's subscriptions (recovery.py,
session_memory.py): the remote gone again mid-replay, a remote that never answers them, the
new session lost while it is being set up. Each ends in a ready link or a clear close, within
the recovery's time, with log lines and no raw traceback. In-process, on test_recovery_state's
scripted link."""

from __future__ import annotations

import logging
import time

import gevent
import pytest
from test_recovery_state import Scripted

from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import UpstreamError

URIS = [f"memo://{name}" for name in "abcdefghij"]


class Faulty(Scripted):
    """The scripted link, whose remote can fail a replayed subscribe (``fail``: raise once
    per URI), never answer one (``silent``), or drop the new session while it is asked one
    (``drop``: once per URI)."""

    def __init__(self, recovery_timeout: float = 5) -> None:
        super().__init__()
        self.settings = ClientSettings(url="http://127.0.0.1:9/mcp", connect_timeout=1,
                                       read_timeout=1, recovery_timeout=recovery_timeout)
        self.fail: set[str] = set()
        self.silent: set[str] = set()
        self.drop: set[str] = set()

    def _post(self, message: Message) -> None:
        uri = message.params.get("uri") if message.kind == jsonrpc.REQUEST else None
        if isinstance(message.id, str) and uri in self.fail:
            self.fail.discard(uri)
            self.posted.append(message)
            raise UpstreamError("POST failed: ConnectionError")
        if isinstance(message.id, str) and uri in self.silent:
            self.posted.append(message)
            return
        if isinstance(message.id, str) and uri in self.drop:
            self.drop.discard(uri)
            self.lost("the GET stream ended")  # as the new session's stream would
        super()._post(message)


def subscribed(concurrent: bool, **options) -> Faulty:
    link = Faulty(**options)
    link.concurrent_requests = concurrent
    link.attach(lambda message: None, lambda: None)
    link.ready.set()
    link._post(Message({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
    link.initialize = link.posted[-1]
    for number, uri in enumerate(URIS, start=1):
        link.memory.sent((False, number), "resources/subscribe", {"uri": uri})
        link.memory.answered((False, number), True)
    return link


def replays(link: Faulty, start: int) -> list[list[str]]:
    """The URIs each recovery attempt after ``start`` asked for, attempt by attempt."""
    attempts: list[list[str]] = []
    for message in link.posted[start:]:
        if message.method == "initialize":
            attempts.append([])
        elif message.method == "resources/subscribe":
            attempts[-1].append(message.params["uri"])
    return attempts


@pytest.mark.parametrize("concurrent", [False, True])
def test_the_remote_gone_again_mid_replay_is_one_more_attempt_and_no_raw_traceback(
        concurrent, capfd, caplog):
    link = subscribed(concurrent)
    link.fail = {"memo://c"}
    start = len(link.posted)
    with caplog.at_level(logging.WARNING), gevent.Timeout(20):
        link.lost("test")
        assert link.ready.wait(15) and not link.closed.is_set()
    attempts = replays(link, start)
    assert len(attempts) == 2 and sorted(attempts[-1]) == URIS
    assert "memo://c" in attempts[0]
    assert any("reconnect failed (POST failed: ConnectionError)" in r.getMessage()
               for r in caplog.records)
    assert "Traceback" not in capfd.readouterr().err  # a pool greenlet's would print there
    link.close("test over")


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_replay_the_remote_never_answers_ends_with_the_recovery_time(concurrent, caplog):
    link = subscribed(concurrent, recovery_timeout=2)
    link.silent = set(URIS[:8])
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), gevent.Timeout(20):
        link.lost("test")
        assert link.ready.wait(15) and not link.closed.is_set()
    assert time.monotonic() - began < 8  # not 21 s per unanswered subscription
    messages = [r.getMessage() for r in caplog.records]
    unanswered = [m for m in messages if "did not answer resources/subscribe" in m]
    ran_out = [m for m in messages if "time ran out" in m]
    assert unanswered and len(ran_out) == 1
    asked = {m.params["uri"] for m in link.posted if m.method == "resources/subscribe"}
    assert f"{len(URIS) - len(asked)} resource subscription(s) not sent again" in ran_out[0]
    link.close("test over")


def test_the_new_session_lost_while_it_is_set_up_is_recovered_again():
    """Before, a loss during the recovery was ignored: the link came back ready on a session
    whose stream had already ended, and nothing ever recovered it."""
    link = subscribed(False)
    link.drop = {"memo://e"}
    start = len(link.posted)
    with gevent.Timeout(20):
        link.lost("test")
        assert link.ready.wait(15) and not link.closed.is_set()
    attempts = replays(link, start)
    assert len(attempts) == 2 and attempts[-1] == URIS
    assert not link.recovering
    link.close("test over")
