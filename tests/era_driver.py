"""The era matrix's client: the same five steps under the official SDK 1.x or 2.x.

Usage: era_driver.py --transport stdio|sse|streamable --target <URL | command line>
                     [--mode legacy|auto|2026-07-28] [--timeout S] --mark FILE
       era_driver.py --cells FILE [--mode ...] [--timeout S]

``--cells`` runs several cells in turn in one process (each on its own event loop, its
lines carrying ``"cell"``), which spares the matrix an SDK import per cell.

Runs under whichever ``mcp`` its interpreter has: 1.x (a 2025-era client: ``ClientSession``,
the ``initialize`` handshake) or 2.x (``Client`` in ``--mode``). Prints one JSON line per
step, ``{"step": NAME, ...}``, a failed step as ``{"step": NAME, "error": ...}``; the first
line is the session (``{"step": "session", "sdk": ..., "protocolVersion": ...}``). Every
await is bounded by --timeout; the exit status is 0 whenever it ran.

Steps: ``tools`` (the tool names), ``progress`` (a call reporting 1, 2, 3), ``sample`` (the
server asks the client for sampling; the answer is "sampled:<prompt>"), ``elicit`` (the
server elicits a name; the client accepts "octocat"), ``subscribe`` (memo://greeting
subscribed, the ``touch`` tool changes it, the ``resources/updated`` URIs seen), ``cancel``
(a 30 s ``slow`` call given up after 0.5 s: SDK 2.x sends ``notifications/cancelled`` or
closes the stream, as its era says, and SDK 1.x, which sends nothing when a call is given up,
is made to send ``notifications/cancelled``; the step reports whether the server's handler
was cancelled, which the server writes to the ``--mark`` file, and an echo after it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
from mcp import StdioServerParameters, stdio_client, types
from mcp.client.sse import sse_client

SDK = version("mcp")
ONE = SDK.startswith("1.")
URI = "memo://greeting"
MODERN = "2026-07-28"
STEPS = ["tools", "progress", "sample", "elicit", "subscribe", "cancel"]


class Seen:
    """What the client's callbacks saw."""

    def __init__(self) -> None:
        self.updated: list[str] = []
        self.asked: list[str] = []

    async def message(self, message: Any) -> None:
        message = getattr(message, "root", message)
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams):
        self.asked.append("sampling/createMessage")
        prompt = getattr(params.messages[0].content, "text", "") if params.messages else ""
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"sampled:{prompt}"),
            model="era-driver", stopReason="endTurn")

    async def elicitation(self, context: Any, params: Any):
        self.asked.append("elicitation/create")
        return types.ElicitResult(action="accept", content={"name": "octocat"})


def text_of(result: types.CallToolResult) -> str:
    text = "".join(getattr(block, "text", "") for block in result.content)
    if getattr(result, "isError", None) or getattr(result, "is_error", None):
        raise RuntimeError(f"tool error: {text}")
    return text


class Session:
    """The calls the steps need, over one SDK's client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def tools(self) -> list[str]:
        return [tool.name for tool in (await self.client.list_tools()).tools]

    async def call(self, name: str, args: dict, progress=None) -> str:
        return text_of(await self.client.call_tool(name, args, progress_callback=progress))

    async def updates(self, uri: str, seen: Seen) -> list[str]:
        """Subscribe to ``uri``, have ``touch`` change it: the updated URIs seen. A
        2026-07-28 session has no resources/subscribe: its subscriptions/listen stream."""
        if self.client_era() != MODERN:
            with warnings.catch_warnings():  # 2.x: "removed as of 2026-07-28", not in 2025
                warnings.simplefilter("ignore")
                await self.client.subscribe_resource(uri)
            await self.call("touch", {"uri": uri})
            await wait_for(lambda: seen.updated, 5.0)
            return seen.updated
        async with self.client.listen(resource_subscriptions=[uri]) as events:
            await self.call("touch", {"uri": uri})
            with anyio.move_on_after(5.0):
                async for event in events:
                    return [str(getattr(event, "uri", event))]
        return []

    def client_era(self) -> str | None:
        return None if ONE else self.client.protocol_version

    async def give_up(self, name: str, args: dict, after: float) -> None:
        """Call, and give up after ``after`` seconds as the SDK does (1.x: by hand)."""
        request_id = getattr(self.client, "_request_id", None) if ONE else None
        with anyio.move_on_after(after):
            await self.client.call_tool(name, args)
            raise RuntimeError(f"{name} answered before it was given up")
        if ONE:  # SDK 1.x leaves the server running the call: say it, as a 2025 client must
            await self.client.send_notification(types.ClientNotification(
                types.CancelledNotification(params=types.CancelledNotificationParams(
                    requestId=request_id, reason="given up"))))


async def step(name: str, session: Session, seen: Seen, mark: Path) -> dict:
    if name == "tools":
        return {"tools": await session.tools()}
    if name == "progress":
        values: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None):
            values.append(progress)

        result = await session.call("progress", {"steps": 3}, on_progress)
        await wait_for(lambda: len(values) >= 3, 2.0)
        return {"result": result, "values": values}
    if name == "sample":
        return {"result": await session.call("sample", {"prompt": "hi"}), "asked": seen.asked}
    if name == "elicit":
        return {"result": await session.call("elicit", {"question": "name?"})}
    if name == "subscribe":
        return {"updated": await session.updates(URI, seen)}
    if name == "cancel":
        started = time.monotonic()
        await session.give_up("slow", {"seconds": 30, "mark": str(mark)}, 0.5)
        await wait_for(mark.exists, 5.0)
        return {"cancelled": mark.read_text() if mark.exists() else None,
                "seconds": round(time.monotonic() - started, 2),
                "after": await session.call("echo", {"text": "after"})}
    raise ValueError(f"unknown step {name!r}")


async def wait_for(predicate, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        while not predicate():
            await anyio.sleep(0.02)


def transport(opts: argparse.Namespace):
    if opts.transport == "stdio":
        argv = shlex.split(opts.target)
        return stdio_client(StdioServerParameters(command=argv[0], args=argv[1:],
                                                  env=dict(os.environ)))
    if opts.transport == "sse":
        return sse_client(opts.target, timeout=opts.timeout, sse_read_timeout=opts.timeout)
    if ONE:
        from mcp.client.streamable_http import streamablehttp_client

        return streamablehttp_client(opts.target, timeout=opts.timeout)
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(opts.target)


CELL: str | None = None  # with --cells, the cell running: each line names it


def emit(report: dict) -> None:
    if CELL is not None:
        report = {"cell": CELL, **report}
    sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    sys.stdout.flush()


async def run_steps(session: Session, seen: Seen, opts: argparse.Namespace,
                    protocol: str | None) -> None:
    emit({"step": "session", "sdk": SDK, "protocolVersion": protocol})
    for name in opts.steps:
        started = time.monotonic()
        try:
            with anyio.fail_after(opts.timeout):
                report = await step(name, session, seen, Path(opts.mark))
        except Exception as exc:  # noqa: BLE001 - the report is the point
            report = {"error": describe(exc)}
        emit({"step": name, **report, "took": round(time.monotonic() - started, 2)})


def describe(exc: BaseException) -> str:
    while len(getattr(exc, "exceptions", ())) == 1:  # a single-exception group
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:500]


async def drive(opts: argparse.Namespace) -> None:
    seen = Seen()
    if ONE:
        from datetime import timedelta

        from mcp import ClientSession

        async with transport(opts) as streams, ClientSession(
                streams[0], streams[1], read_timeout_seconds=timedelta(seconds=opts.timeout),
                sampling_callback=seen.sampling, elicitation_callback=seen.elicitation,
                message_handler=seen.message) as client:
            with anyio.fail_after(opts.timeout):
                init = await client.initialize()
            await run_steps(Session(client), seen, opts, init.protocolVersion)
        return
    from mcp import Client

    client = Client(transport(opts), mode=opts.mode, cache=None,
                    client_info=types.Implementation(name="era-driver", version="1.0"),
                    read_timeout_seconds=opts.timeout, sampling_callback=seen.sampling,
                    elicitation_callback=seen.elicitation, message_handler=seen.message)
    # anyio scopes must nest: one around the session, its deadline lifted while the
    # (individually bounded) steps run, then bounding the close
    with anyio.CancelScope(deadline=anyio.current_time() + opts.timeout) as scope:
        async with client:
            scope.deadline = math.inf
            await run_steps(Session(client), seen, opts, client.protocol_version)
            scope.deadline = anyio.current_time() + opts.timeout
    if scope.cancelled_caught:
        emit({"step": "close", "error": f"timed out after {opts.timeout} s"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "sse", "streamable"])
    parser.add_argument("--target")
    parser.add_argument("--mode", default="legacy", help="SDK 2.x: legacy | auto | 2026-07-28")
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--mark", help="the file the slow call's cancel writes")
    parser.add_argument("--cells", help="a JSON list of {cell, transport, target, mark}: "
                        "each run in turn, its lines tagged with its cell")
    parser.add_argument("steps", nargs="*", default=STEPS)
    opts = parser.parse_args()
    if opts.cells:
        with open(opts.cells, encoding="utf-8") as handle:
            cells = json.load(handle)
    elif opts.transport and opts.target and opts.mark:
        cells = [{"transport": opts.transport, "target": opts.target, "mark": opts.mark}]
    else:
        parser.error("give --cells, or --transport, --target and --mark")
    for cell in cells:  # one event loop each: a cell that breaks leaves the next one whole
        global CELL
        CELL = cell.get("cell")
        try:
            anyio.run(drive, argparse.Namespace(**{**vars(opts), **cell}))
        except Exception as exc:  # noqa: BLE001 - a session that failed is an observation too
            emit({"step": "session", "error": describe(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
