"""Drive an MCP server (or a proxy) with the official Python SDK client (mcp 2.x, asyncio).

Usage:
  sdk_driver.py --transport stdio|sse|streamable --target <URL | command line>
                [--header K V ...] [--timeout S] [--mode legacy|auto|2026-07-28]
                [--big BYTES] [--sdk-env] [--oauth] SCENARIO [SCENARIO ...]

Prints ONE JSON object on stdout: ``{"session": {...}, "<scenario>": <observation>, ...}``,
where a scenario that raised reports ``{"error": "..."}``; exit status 0 whenever it ran.
Every await is bounded by --timeout (default 30 s); ``crash`` always runs last.

The client declares sampling (answers "sampled:<prompt>"), elicitation (accepts with
{"name": "octocat"}) and roots (file:///tmp/root-a, file:///tmp/root-b), and collects log
messages and progress values. ``--mode legacy`` (the default) performs the ``initialize``
handshake (protocol 2025-11-25); ``auto`` first probes ``server/discover`` (2026-07-28) and
falls back to ``initialize``; ``2026-07-28`` adopts the modern era without any probe.

Scenarios: tools echo unicode progress log sample elicit roots fail big_in big_out ping
unknown_method concurrent tagged set_level subscribe cancel crash (``tagged`` calls the tool
whose argument is also an ``Mcp-Param-Region`` header, with a non-ASCII value; ``set_level``
sends the 2025 era's ``logging/setLevel`` debug; ``subscribe`` subscribes to memo://greeting,
has the ``touch`` tool change it and reports the ``resources/updated`` URIs seen; ``cancel``
gives up on a 30 s ``slow`` call after 1 s (the SDK sends ``notifications/cancelled``), then
reports an echo's text)
``script`` runs the steps of ``--script FILE`` (a JSON list) and reports each one's outcome
(``mark`` writes a file the test waits for, ``await`` waits for one the test writes: a test
changes its servers between steps that way; ``subscribe``, ``unsubscribe`` and ``set_level``
send those requests; ``observed`` reports the resources/updated URIs and log lines seen since
the last one, waiting (bounded) for those ``expect`` names; a ``call`` with ``retry`` S tries
again while it fails, up to S seconds; ``call_until`` calls again until the ``expect`` URIs
were updated, up to ``seconds``; ``listen_open`` holds a 2026-07-28 listen to ``uris`` until
the script ends, ``listen_next`` reports its next event).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Literal

import anyio
import httpx2
import mcp.client.sse
from mcp import Client, StdioServerParameters, stdio_client, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared._httpx_utils import sse_within_origin as _sse_within_origin
from mcp.shared.exceptions import MCPError

SCENARIOS = ["tools", "echo", "unicode", "progress", "log", "sample", "elicit", "roots", "fail",
             "big_in", "big_out", "ping", "unknown_method", "concurrent", "tagged", "set_level",
             "resources", "prompts", "subscribe", "listen", "cancel", "script", "crash"]
UNICODE = "héllo ✓ 日本"
ROOTS = ["file:///tmp/root-a", "file:///tmp/root-b"]


class FooBarRequest(types.Request[types.RequestParams | None, Literal["foo/bar"]]):
    """A request for a method no server implements."""

    method: Literal["foo/bar"] = "foo/bar"
    params: types.RequestParams | None = None


class Observed:
    """What the client callbacks saw."""

    def __init__(self) -> None:
        self.logs: list[dict] = []
        self.server_requests: list[str] = []
        self.updated: list[str] = []
        self.notifications: list[str] = []

    async def message(self, message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        method = getattr(getattr(message, "root", message), "method", None)
        if isinstance(method, str):
            self.notifications.append(method)

    async def sampling(self, context, params: types.CreateMessageRequestParams):
        self.server_requests.append("sampling/createMessage")
        content = params.messages[0].content if params.messages else None
        prompt = getattr(content, "text", "")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"sampled:{prompt}"),
            model="sdk-driver", stop_reason="endTurn")

    async def elicitation(self, context, params: types.ElicitRequestParams):
        self.server_requests.append("elicitation/create")
        return types.ElicitResult(action="accept", content={"name": "octocat"})

    async def list_roots(self, context):
        self.server_requests.append("roots/list")
        return types.ListRootsResult(roots=[types.Root(uri=uri) for uri in ROOTS])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append({"level": params.level, "data": params.data, "logger": params.logger})


def text_of(result: types.CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def checked(result: types.CallToolResult) -> str:
    if result.is_error:
        raise RuntimeError(f"tool error: {text_of(result)}")
    return text_of(result)


async def wait_for(predicate, seconds: float = 2.0) -> None:
    """Notifications are delivered on their own tasks: give late ones a moment."""
    with anyio.move_on_after(seconds):
        while not predicate():
            await anyio.sleep(0.02)


async def run_scenario(name: str, client: Client, seen: Observed, big: int) -> Any:
    if name == "tools":
        return [tool.name for tool in (await client.list_tools()).tools]
    if name == "echo":
        return checked(await client.call_tool("echo", {"text": "hello"}))
    if name == "unicode":
        return checked(await client.call_tool("echo", {"text": UNICODE}))
    if name == "progress":
        values: list[dict] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            values.append({"progress": progress, "total": total, "message": message})

        result = checked(await client.call_tool("progress", {"steps": 3},
                                                progress_callback=on_progress))
        await wait_for(lambda: len(values) >= 3)
        return {"values": [v["progress"] for v in values], "totals": [v["total"] for v in values],
                "result": result}
    if name == "log":
        before = len(seen.logs)
        result = checked(await client.call_tool("log", {"message": "hello log",
                                                        "level": "warning"}))
        await wait_for(lambda: len(seen.logs) > before)
        return {"messages": seen.logs[before:], "result": result}
    if name == "sample":
        return checked(await client.call_tool("sample", {"prompt": "hi there"}))
    if name == "elicit":
        return checked(await client.call_tool("elicit", {"question": "your name?"}))
    if name == "roots":
        return checked(await client.call_tool("roots", {}))
    if name == "fail":
        result = await client.call_tool("fail", {"message": "boom"})
        return {"isError": bool(result.is_error), "text": text_of(result)}
    if name == "big_in":
        return int(checked(await client.call_tool("size", {"text": "y" * big})))
    if name == "big_out":
        return len(checked(await client.call_tool("large", {"n": big})))
    if name == "ping":
        result = await client.session.send_ping()
        return result.model_dump(by_alias=True, exclude_none=True)
    if name == "unknown_method":
        try:
            await client.session.send_request(FooBarRequest(), types.EmptyResult)
        except MCPError as exc:
            return {"code": exc.code, "message": exc.message}
        return {"unexpected": "no error"}
    if name == "concurrent":
        results: list[Any] = [None] * 10

        async def one(i: int) -> None:
            results[i] = checked(await client.call_tool("echo", {"text": f"msg-{i}"}))

        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(one, i)
        return results
    if name == "tagged":
        return checked(await client.call_tool("tagged", {"region": " Zürich"}))
    if name == "resources":
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        read = await client.read_resource("memo://greeting")
        return {"listed": listed, "text": read.contents[0].text}
    if name == "prompts":
        listed = [p.name for p in (await client.list_prompts()).prompts]
        got = await client.get_prompt("greet", {"who": "octocat"})
        return {"listed": listed, "text": got.messages[0].content.text}
    if name == "set_level":
        result = await client.set_logging_level("debug")
        return result.model_dump(by_alias=True, exclude_none=True)
    if name == "subscribe":
        await client.subscribe_resource("memo://greeting")
        checked(await client.call_tool("touch", {"uri": "memo://greeting"}))
        await wait_for(lambda: seen.updated, 5.0)
        return seen.updated
    if name == "listen":  # the 2026-07-28 era's subscriptions: one listen stream
        async with client.listen(tools_list_changed=True,
                                 resource_subscriptions=["memo://greeting"]) as sub:
            touch, change = LISTEN_TOOLS
            await client.call_tool(touch, {"uri": "memo://greeting"})
            await client.call_tool(change, {})
            got = [await sub.__anext__(), await sub.__anext__()]
            return {"honored": sub.honored.model_dump(by_alias=True, exclude_none=True),
                    "events": sorted(type(event).__name__ for event in got)}
    if name == "cancel":
        with anyio.move_on_after(1.0):
            result = await client.call_tool("slow", {"seconds": 30})
            return {"unexpected": "slow answered", "text": text_of(result)}
        return checked(await client.call_tool("echo", {"text": "after cancel"}))
    if name == "script":
        results = [await script_step(step, client, seen) for step in SCRIPT]
        await HELD.aclose()
        return results
    if name == "crash":
        result = await client.call_tool("crash", {})
        return {"unexpected": "crash answered", "text": text_of(result)}
    raise ValueError(f"unknown scenario {name!r}")


SCRIPT: list = []  # --script's steps
HELD = contextlib.AsyncExitStack()  # a listen held across steps (listen_open)
LISTENS: list = []
LISTEN_TOOLS = ["touch", "change"]  # --listen-tools
_LISTS = {"tools": ("list_tools", "tools", "name"), "prompts": ("list_prompts", "prompts", "name"),
          "resources": ("list_resources", "resources", "uri"),
          "templates": ("list_resource_templates", "resource_templates", "uri_template")}


async def script_step(step: dict, client: Client, seen: Observed) -> Any:
    """One step of ``--script``: its observation (an error as ``describe`` reports it)."""
    try:
        op = step["op"]
        if op in ("list", "page"):
            method, key, field = _LISTS[step["what"]]
            names, pages, cursor = [], 0, step.get("cursor")
            while True:
                result = await getattr(client, method)(cursor=cursor, cache_mode="bypass")
                pages += 1
                names += [str(getattr(item, field)) for item in getattr(result, key)]
                cursor = result.next_cursor
                if op == "page" or not cursor or pages > 100:
                    return {"names": names, "pages": pages, "next": cursor}
        if op == "call":
            result = await call_retrying(client, step)
            return {"text": text_of(result), "isError": bool(result.is_error)}
        if op == "read":
            read = await client.read_resource(step["uri"])
            return {"text": getattr(read.contents[0], "text", None)}
        if op == "subscribe":
            await client.subscribe_resource(step["uri"])
            return "subscribed"
        if op == "unsubscribe":
            await client.unsubscribe_resource(step["uri"])
            return "unsubscribed"
        if op == "set_level":
            await client.set_logging_level(step["level"])
            return "set"
        if op == "listen_open":  # 2026-07-28: a listen held until the script ends
            LISTENS.append(await HELD.enter_async_context(client.listen(
                resource_subscriptions=step["uris"])))
            return "listening"
        if op == "listen_next":  # the held listen's next event (bounded)
            with anyio.fail_after(step.get("seconds", 20.0)):
                event = await LISTENS[-1].__anext__()
            return {"event": type(event).__name__, "uri": str(getattr(event, "uri", ""))}
        if op == "call_until":  # called again until the URIs of "expect" were updated
            deadline = time.monotonic() + step.get("seconds", 30.0)
            calls = 0
            while not set(step["expect"]) <= set(seen.updated) and time.monotonic() < deadline:
                await client.call_tool(step["name"], step.get("args", {}))
                calls += 1
                await wait_for(lambda: set(step["expect"]) <= set(seen.updated), 0.5)
            return {"calls": calls, "updated": sorted(set(seen.updated))}
        if op == "observed":  # what came since the last one: waits for "expect", then a moment
            await wait_for(lambda: set(step.get("expect", [])) <= {
                *seen.updated, *(str(log["data"]) for log in seen.logs)}, 20.0)
            await anyio.sleep(step.get("settle", 0.5))
            report = {"updated": sorted(set(seen.updated)),
                      "logs": [str(log["data"]) for log in seen.logs]}
            seen.updated.clear()
            seen.logs.clear()
            return report
        if op == "prompt":
            got = await client.get_prompt(step["name"], step.get("args") or None)
            return {"text": got.messages[0].content.text}
        if op == "mark":  # tell the test (it waits for the file), e.g. to stop a server
            with open(step["path"], "w", encoding="utf-8") as handle:
                handle.write("mark")
            return "marked"
        if op == "await":  # wait (bounded) for the test's file: what it did is done
            await wait_for(lambda: os.path.exists(step["path"]), step.get("seconds", 60.0))
            return os.path.exists(step["path"])
        if op == "changed":
            changed = "notifications/tools/list_changed"
            await wait_for(lambda: seen.notifications.count(changed) >= step["seen"],
                           step.get("seconds", 20.0))
            return seen.notifications.count(changed)
        raise ValueError(f"unknown step {op!r}")
    except Exception as exc:  # noqa: BLE001 - the report is the point
        return describe(exc)


async def call_retrying(client: Client, step: dict):
    """A tool call; with ``retry`` (seconds) called again while it fails, as a client does
    while the proxy recovers its remote."""
    deadline = time.monotonic() + step.get("retry", 0.0)
    while True:
        try:
            result = await client.call_tool(step["name"], step.get("args", {}))
            if not result.is_error or time.monotonic() > deadline:
                return result
        except MCPError:
            if time.monotonic() > deadline:
                raise
        await anyio.sleep(0.2)


def describe(exc: BaseException) -> dict:
    """An exception as a JSON-able observation (unwrapping single-exception groups)."""
    while len(getattr(exc, "exceptions", ())) == 1:  # a single-exception group
        exc = exc.exceptions[0]
    report: dict[str, Any] = {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__}
    if isinstance(exc, MCPError):
        report["code"] = exc.code
    return report


def make_transport(opts: argparse.Namespace):
    """The SDK transport (an async context manager yielding the stream pair) for the target."""
    headers = dict(opts.header or [])
    if opts.transport == "stdio":
        argv = shlex.split(opts.target)
        # The SDK passes only HOME, LOGNAME, PATH, SHELL, TERM and USER to the child;
        # a test harness wants its whole environment passed on, unless --sdk-env.
        env = None if opts.sdk_env else dict(os.environ)
        return stdio_client(StdioServerParameters(command=argv[0], args=argv[1:], env=env))
    if opts.transport == "sse":
        # sse_client hard-codes a 1 MiB SSE event limit (httpx2 EventSource); lift it.
        mcp.client.sse.sse_within_origin = functools.partial(
            _sse_within_origin, max_event_size=None)
        return sse_client(opts.target, headers=headers, timeout=opts.timeout,
                          sse_read_timeout=max(opts.timeout, 60.0))
    auth = None
    if opts.oauth:  # the SDK's own OAuth client provider signs in (sdk_oauth.py)
        import sdk_oauth

        auth = sdk_oauth.provider(opts.target, opts.visits)
    return streamable(opts.target, headers, opts.timeout, auth)


@contextlib.asynccontextmanager
async def streamable(url: str, headers: dict, timeout: float, auth=None):
    """streamable_http_client with our headers and no SSE event size limit (default 1 MiB)."""
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(
        timeout, read=max(timeout, 60.0)), auth=auth)
    async with http, streamable_http_client(url, http_client=http,
                                            max_sse_event_size=None) as streams:
        yield streams


async def drive(opts: argparse.Namespace) -> dict:
    seen = Observed()
    report: dict[str, Any] = {}
    client = Client(make_transport(opts), mode=opts.mode, cache=None, log_level="debug",
                    client_info=types.Implementation(name="sdk-driver", version="1.0"),
                    read_timeout_seconds=opts.timeout, sampling_callback=seen.sampling,
                    elicitation_callback=seen.elicitation, list_roots_callback=seen.list_roots,
                    logging_callback=seen.logging, message_handler=seen.message)
    started = time.monotonic()
    current = "session"  # what a session-level failure is reported under
    # One scope around the whole session (anyio scopes must nest): its deadline bounds the
    # connect, is lifted while the (individually bounded) scenarios run, and bounds the close.
    with anyio.CancelScope(deadline=anyio.current_time() + opts.timeout) as scope:
        try:
            async with client:
                scope.deadline = math.inf
                report["session"] = {
                    "protocolVersion": client.protocol_version,
                    "serverInfo": client.server_info.model_dump(exclude_none=True)
                    if client.server_info else None,
                    "connectSeconds": round(time.monotonic() - started, 3),
                }
                order = [s for s in opts.scenarios if s != "crash"] + (
                    ["crash"] if "crash" in opts.scenarios else [])
                for name in order:
                    current = name
                    try:
                        with anyio.fail_after(opts.timeout):
                            report[name] = await run_scenario(name, client, seen, opts.big)
                    except TimeoutError:
                        report[name] = {"error": f"timed out after {opts.timeout} s",
                                        "type": "TimeoutError"}
                    except Exception as exc:  # noqa: BLE001 - the report is the point
                        report[name] = describe(exc)
                current = "close"
                scope.deadline = anyio.current_time() + opts.timeout
        except Exception as exc:  # noqa: BLE001 - e.g. a transport error tearing the session down
            report.setdefault(current, describe(exc))
    if scope.cancelled_caught:
        report.setdefault(current, {"error": f"timed out after {opts.timeout} s",
                                    "type": "TimeoutError"})
    report["server_requests"] = seen.server_requests
    if opts.oauth:
        report["sign_in_visits"] = opts.visits
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", required=True, choices=["stdio", "sse", "streamable"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--header", nargs=2, action="append", metavar=("K", "V"))
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--mode", default="legacy", help="legacy | auto | 2026-07-28")
    parser.add_argument("--big", type=int, default=10 << 20, help="bytes for big_in/big_out")
    parser.add_argument("--sdk-env", action="store_true",
                        help="stdio: pass only the SDK's default environment whitelist")
    parser.add_argument("--oauth", action="store_true",
                        help="streamable: sign in with the SDK's OAuth client provider "
                             "(sdk_oauth.py); the report lists the URLs its browser visited")
    parser.add_argument("--script", help="the steps of the script scenario (a JSON file)")
    parser.add_argument("--listen-tools", nargs=2, metavar=("TOUCH", "CHANGE"),
                        help="listen: the tools that send resources/updated (of its uri "
                             "argument) and tools/list_changed")
    parser.add_argument("scenarios", nargs="+", choices=SCENARIOS, metavar="SCENARIO")
    opts = parser.parse_args()
    opts.visits = []
    if opts.listen_tools:
        LISTEN_TOOLS[:] = opts.listen_tools
    if opts.script:
        with open(opts.script, encoding="utf-8") as handle:
            SCRIPT.extend(json.load(handle))
    report = anyio.run(drive, opts)
    sys.stdout.buffer.write(json.dumps(report, ensure_ascii=False).encode() + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
