"""The era matrix, client mode: each client era as the desktop client on the proxy's stdio,
in front of a 2025-only, a dual-era and a 2026-07-28-only server, reached over each remote
transport (issue 25).

The remote is a server-mode proxy in front of the stdio server (over ``/mcp`` or ``/sse``),
or the server itself over Streamable HTTP (``sdk_server.py streamable-http --era``), which is
where client mode's own bridges work: a 2026-07-28-only remote for a 2025-era desktop client,
a 2025-only remote for a 2026-07-28 one. One remote per (server, kind), shared by the module's
cells; each cell starts its own client-mode proxy (the desktop client's stdio server).
"""

from __future__ import annotations

import shlex
import sys

import pytest
from era_matrix import (
    CLIENTS,
    LEGACY,
    MODERN,
    SERVER_COMMANDS,
    cell_id,
    check_cell,
    reports_by_client,
    start_direct,
    start_proxy,
)

REMOTES = ("proxy/mcp", "proxy/sse", "server/mcp")
CELLS = [(client, server, remote) for server in SERVER_COMMANDS for client in CLIENTS
         for remote in REMOTES]



@pytest.fixture(scope="module")
def remotes():
    """The remote of each (server, kind), started on first use."""
    started: dict = {}

    def remote(server: str, kind: str) -> str:
        key = (server, kind.split("/")[0])
        if key not in started:
            started[key] = (start_proxy("--", *SERVER_COMMANDS[server])
                            if kind.startswith("proxy") else start_direct(server))
        return started[key].base + "/" + kind.split("/")[1]

    yield remote
    for process in started.values():
        process.stop()


@pytest.fixture(scope="module")
def reports(remotes, tmp_path_factory):
    return reports_by_client(CELLS, lambda cell: ("stdio", desktop(remotes(*cell[1:]))),
                             tmp_path_factory)


def desktop(url: str) -> str:
    """The command a desktop client runs: client mode in front of ``url``."""
    transport = ["--transport", "sse"] if url.endswith("/sse") else []
    return shlex.join([sys.executable, "-m", "mcp_proxy", *transport, url])


@pytest.mark.parametrize(("client", "server", "remote"), [
    pytest.param(*cell, id=cell_id(*cell)) for cell in CELLS])
def test_cell(reports, client, server, remote):
    # a client that starts in 2026-07-28 (auto or modern) stays in it: a remote with no
    # 2026-07-28 era (HTTP+SSE, or the 2025-only server itself) is bridged by client mode
    check_cell(reports(client, server, remote),
               MODERN if client in ("auto", "modern") else LEGACY)
