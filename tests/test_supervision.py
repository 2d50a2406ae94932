"""Background greenlets are supervised: a crash is logged once and closes what it served.

The helper runs in the test process (gevent without monkey-patching); the client-mode case
runs the real CLI against a scripted Streamable HTTP remote whose stream says ``retry: soon``.
"""

from __future__ import annotations

import json
import logging
import sys

import gevent

from conftest import Scripted, rpc
from mcp_proxy.client.run import Redact
from mcp_proxy.config.settings import ClientSettings
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.link import Link
from mcp_proxy.errors import UpstreamError
from mcp_proxy.upstream.remote_link import Upstream


def test_a_crash_is_logged_once_and_handed_to_on_error(caplog):
    seen = []
    with caplog.at_level(logging.ERROR, logger="mcp_proxy.core.greenlets"):
        greenlet = spawn(lambda n: 1 / n, 0, name="divider", on_error=seen.append)
        greenlet.join(5)
        gevent.sleep(0.01)  # on_error runs in its own greenlet
    assert [type(exc) for exc in seen] == [ZeroDivisionError]
    assert greenlet.name == "divider"
    records = [r for r in caplog.records if r.name == "mcp_proxy.core.greenlets"]
    assert [r.getMessage() for r in records] == ["divider crashed"]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None


def test_a_kill_or_a_return_is_no_crash(caplog):
    seen = []
    with caplog.at_level(logging.ERROR, logger="mcp_proxy.core.greenlets"):
        done = spawn(lambda: 42, name="quick", on_error=seen.append)
        assert done.get(timeout=5) == 42
        sleeper = spawn(gevent.sleep, 30, name="sleeper", on_error=seen.append)
        gevent.sleep(0)
        sleeper.kill(timeout=5)
        gevent.sleep(0.01)
    assert sleeper.dead and seen == [] and not caplog.records


def test_a_failing_handler_is_reported_not_raised(caplog):
    def handler(exc):
        raise RuntimeError("handler broke")

    with caplog.at_level(logging.ERROR, logger="mcp_proxy.core.greenlets"):
        spawn(lambda: {}["missing"], name="lookup", on_error=handler).join(5)
        gevent.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "lookup crashed", "lookup: handling its crash failed"]


def test_closing_closes_the_link_and_names_the_error():
    link = Link("remote")
    spawn(lambda: None.missing, name="reader", on_error=closing(link)).join(5)
    assert link.closed.wait(5)
    assert link.close_reason == "proxy error: AttributeError in a background task"


def test_a_crash_traceback_carries_no_secret():
    try:
        raise ValueError("GET https://host/sse?token=s3cret-query failed")
    except ValueError:
        record = logging.LogRecord("mcp_proxy.core.greenlets", logging.ERROR, __file__, 1,
                                   "%s crashed", ("reader",), sys.exc_info())
    assert Redact(["token=s3cret-query"]).filter(record)
    text = logging.Formatter().format(record)
    assert "reader crashed" in text and "ValueError: GET https://host/sse?*** failed" in text
    assert "s3cret" not in text


class BrokenRecovery(Upstream):
    """Connects once; reconnecting then fails with a bug, not with an UpstreamError."""

    opened = 0

    def _open(self) -> None:
        self.opened += 1
        if self.opened > 1:
            raise KeyError("a bug in reconnecting")

    def _post(self, message) -> None:
        raise UpstreamError("unused")


def test_a_crash_in_recovery_closes_the_upstream_at_once():
    upstream = BrokenRecovery(ClientSettings(url="http://127.0.0.1:9/mcp",
                                             recovery_timeout=300), None, "broken")
    upstream.start()
    upstream.lost("the remote went away")
    assert upstream.closed.wait(5), "recovery died silently; the link stayed half-alive"
    assert "KeyError" in upstream.close_reason


# --- a remote whose answer stream says "retry: soon" ---------------------------------------

INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "serverInfo": {"name": "retry-soon", "version": "0"}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "data": "resuming"}}


class RetrySoon(Scripted):
    """Streamable HTTP: session s-1 expires at its first request; the replayed initialize is
    answered on a stream that says ``retry: soon`` and ends early, then on the resumed GET."""

    def do_GET(self) -> None:
        if self.headers.get("Last-Event-ID") != "e1":
            return self.reply(405)
        self.server.resumed += 1
        answer = {"jsonrpc": "2.0", "id": self.server.replay_id, "result": INIT}
        self.reply_event("e2", answer)

    def do_POST(self) -> None:
        message = json.loads(self.body())
        session = self.headers.get("Mcp-Session-Id")
        if "id" not in message:
            return self.reply(202)
        if message["method"] == "initialize":
            self.server.inits += 1
            if self.server.inits == 1:
                return self.reply_result(message["id"], INIT, Mcp_Session_Id="s-1")
            self.server.replay_id = message["id"]
            return self.reply_event("e1", NOTE, retry="soon", Mcp_Session_Id="s-2")
        if session != "s-2":
            return self.reply(404, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
                                   b'"message":"Session not found"}}')
        self.reply_result(message["id"], {"session": session})


def test_bad_retry_field_does_not_wedge_recovery(scripted, clients):
    server, base = scripted(RetrySoon, inits=0, resumed=0, replay_id=None)
    client = clients("--transport", "streamablehttp", "--recovery-timeout", "120", base + "/mcp")
    client.handshake()
    expired = client.call(rpc("ping", 1))
    assert expired["id"] == 1 and "no longer knows our session" in expired["error"]["message"]
    client.send(rpc("ping", 2))
    got = [client.recv(timeout=15) for _ in range(2)]  # the note, then the answer
    assert got == [NOTE, {"jsonrpc": "2.0", "id": 2, "result": {"session": "s-2"}}]
    assert server.inits == 2 and server.resumed == 1
    assert client.close() == 0
    assert "re-initialized" in client.stderr() and "crashed" not in client.stderr()
