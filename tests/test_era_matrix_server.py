"""The era matrix, server mode: each client era on ``/mcp`` and ``/sse`` of a proxy in front
of a 2025-only, a dual-era and a 2026-07-28-only stdio server (issue 25).

One proxy per server era, shared by the module's cells; each session gets its own child.
Every cell runs tools/list, a call with progress, a sampling and an elicitation round trip,
a resource subscription's update and a cancellation (era_matrix.py, era_driver.py).
"""

from __future__ import annotations

import pytest
import requests
from era_matrix import (
    CLIENTS,
    LEGACY,
    ROOT,
    SERVER_COMMANDS,
    SSE_ONLY_2025,
    cell_id,
    check_cell,
    client_era,
    reports_by_client,
    start_proxy,
)

from conftest import RAW_SERVER, open_sse, rpc

TRANSPORTS = {"/mcp": "streamable", "/sse": "sse"}
CELLS = [(client, server, path) for server in SERVER_COMMANDS for client in CLIENTS
         for path in ("/mcp", "/sse")]


@pytest.fixture(scope="module")
def proxies():
    """One server-mode proxy per server era, started on first use."""
    started: dict = {}

    def proxy(server: str):
        if server not in started:
            started[server] = start_proxy("--", *SERVER_COMMANDS[server])
        return started[server]

    yield proxy
    for process in started.values():
        process.stop()


@pytest.fixture(scope="module")
def reports(proxies, tmp_path_factory):
    possible = [cell for cell in CELLS if not impossible(*cell)]
    return reports_by_client(possible, lambda cell: (TRANSPORTS[cell[2]],
                                                     proxies(cell[1]).base + cell[2]),
                             tmp_path_factory)


def impossible(client: str, server: str, path: str) -> bool:
    return client == "modern" and path == "/sse"


@pytest.mark.parametrize(("client", "server", "path"), CELLS,
                         ids=[cell_id(*cell) for cell in CELLS])
def test_cell(reports, client, server, path):
    if impossible(client, server, path):
        pytest.skip(SSE_ONLY_2025)
    # on /sse the proxy refuses server/discover, as a 2025-era server does: auto falls back
    check_cell(reports(client, server, path),
               client_era(client, True) if path == "/mcp" else LEGACY)


def test_sse_refuses_server_discover_as_a_2025_server_does(proxy_factory):
    """HTTP+SSE has no 2026-07-28 era: the probe of an ``auto`` client hears -32601 from the
    proxy itself (whatever the server speaks), a notification of that name is relayed as
    any other, and the session goes on."""
    proxy = proxy_factory("--", *RAW_SERVER)
    reader, endpoint = open_sse(proxy.base)
    for request_id in (1, "probe"):
        posted = requests.post(endpoint, json=rpc("server/discover", request_id), timeout=10)
        assert (posted.status_code, posted.text) == (202, "Accepted")
        answer = reader.next_message()
        assert answer["id"] == request_id and answer["error"]["code"] == -32601
        assert "Streamable HTTP" in answer["error"]["message"]
    posted = requests.post(endpoint, json=rpc("server/discover", None), timeout=10)
    assert posted.status_code == 202
    posted = requests.post(endpoint, json=rpc("ping", 7), timeout=10)
    assert reader.next_message() == {"jsonrpc": "2.0", "id": 7, "result": {}}
    reader.close()


def test_the_docs_give_the_reason_a_cell_cannot_exist():
    text = " ".join((ROOT / "docs" / "eras.md").read_text().split())
    assert SSE_ONLY_2025.removeprefix("impossible: ") in text
