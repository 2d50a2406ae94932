"""Client mode's event streams from a Streamable HTTP remote: the GET stream a fresh session
opens.

The remote is the official SDK's server (tests/servers/sdk_server.py).
"""

from __future__ import annotations

import queue

import pytest
from test_sdk_e2e import start_remote

from conftest import rpc

ASKING = {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}},
          "clientInfo": {"name": "tests", "version": "0"}}
ROOTS = {"roots": [{"uri": "file:///tmp/root-a"}]}


@pytest.fixture(scope="module")
def sdk_remote():
    remote, port = start_remote("streamable-http")
    yield f"http://127.0.0.1:{port}/mcp"
    remote.terminate()
    remote.wait(10)


def test_a_fresh_sessions_first_call_gets_the_request_sent_on_the_get_stream(sdk_remote,
                                                                              clients):
    """A server asks its question on the GET stream (the SDK's ``list_roots`` without a
    related request, as SDK 1.x servers always did) and drops it while that stream is not
    open: a fresh session's first call must not reach the server before the GET stream does.
    The race was lost in about 1 of 3 fresh sessions: twelve are run."""
    for session in range(12):
        client = clients("--transport", "streamablehttp", sdk_remote)
        assert "result" in client.call(rpc("initialize", 0, **ASKING))
        client.send(rpc("notifications/initialized", None))
        client.send(rpc("tools/call", 1, name="roots_standalone", arguments={}))
        try:
            asked = client.recv(5)
        except queue.Empty:
            pytest.fail(f"session {session}: the server's roots/list never came; the proxy "
                        f"said:\n{client.stderr()}")
        assert asked.get("method") == "roots/list", asked
        client.send({"jsonrpc": "2.0", "id": asked["id"], "result": ROOTS})
        answer = client.recv(10)
        assert answer["id"] == 1 and answer["result"]["content"][0]["text"] == \
            "file:///tmp/root-a", answer
        assert client.close() == 0
