"""sdk_server.py with the 2025 era's log level per session and refusable subscriptions, for
the tests of what a recovered remote session gets back (test_recovery_state.py).

Usage: levels_server.py [sdk_server.py's arguments] [--refuse PREFIX ...] [--record FILE]

- ``logging/setLevel`` is served: the session's level (default ``info``) filters the
  ``logs`` tool's lines, one per level from debug to error;
- ``resources/subscribe`` of a URI that starts with a ``--refuse`` prefix is refused
  (-32602), any other is recorded as sdk_server's is; ``--record`` appends each subscribe and
  setLevel it gets, as a JSON line ``{"method": ..., "value": ...}``;
- the ``subscribed`` tool returns the URIs subscribed (this process's, sorted) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import sdk_server
from mcp import types
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

LEVELS = ["debug", "info", "notice", "warning", "error"]
DEFAULT = "info"
OPTIONS = argparse.Namespace(refuse=[], record=None)
SESSION_LEVELS: dict = {}  # a session's connection -> its level (a test server: few)
server = sdk_server.server


def connection(session):
    """What stays the same across a session's requests (the SDK makes a ServerSession per
    request; its connection is the session's)."""
    return getattr(session, "_connection", session)


def record(method: str, value: str) -> None:
    if OPTIONS.record:
        with open(OPTIONS.record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"method": method, "value": value}) + "\n")


async def set_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    record("logging/setLevel", params.level)
    SESSION_LEVELS[connection(ctx.session)] = params.level
    return types.EmptyResult()


async def subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    uri = str(params.uri)
    record("resources/subscribe", uri)
    if any(uri.startswith(prefix) for prefix in OPTIONS.refuse):
        raise MCPError(-32602, f"subscriptions to {uri} are refused here")
    sdk_server.SUBSCRIBED.add(uri)
    return types.EmptyResult()


server._lowlevel_server.add_request_handler(  # noqa: SLF001 - as sdk_server.py does
    "logging/setLevel", types.SetLevelRequestParams, set_level)
server._lowlevel_server.add_request_handler(  # noqa: SLF001
    "resources/subscribe", types.SubscribeRequestParams, subscribe)


@server.tool()
async def logs(ctx: Context) -> str:
    """Log one line per level, those the session's level admits; return "logged"."""
    floor = LEVELS.index(SESSION_LEVELS.get(connection(ctx.session), DEFAULT))
    for level in LEVELS[floor:]:
        await ctx.log(level, f"a {level} line")  # type: ignore[arg-type]
    return "logged"


@server.tool()
def subscribed() -> str:
    """The URIs this process holds subscribed, sorted, as JSON."""
    return json.dumps(sorted(sdk_server.SUBSCRIBED))


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--refuse", action="append", default=[])
    parser.add_argument("--record")
    parser.parse_known_args(namespace=OPTIONS)
    sys.argv = [sys.argv[0], *parser.parse_known_args()[1]]
    sdk_server.main()


if __name__ == "__main__":
    main()
