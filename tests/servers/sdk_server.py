"""An MCP test server on the official Python SDK (mcp 2.x ``MCPServer``).

Usage: sdk_server.py [stdio|sse|streamable-http] [--port N] [--host 127.0.0.1]
                     [--require-token TOKEN] [--max-body BYTES] [--era both|modern|legacy]

HTTP modes serve ``/sse`` + ``/messages/`` (sse) or ``/mcp`` (streamable-http) exactly as the
SDK does, and print ``LISTENING <port>`` on stderr once bound (``--port 0`` = random port).
``--require-token`` answers 401 to any HTTP request without ``Authorization: Bearer TOKEN``.
``--max-body`` raises the SDK's 4 MiB POST body limit (default here: 64 MiB, for big inputs).
``--era`` narrows streamable-http to one protocol era (the SDK serves both on /mcp):
``modern`` answers every POST without a 2026-07-28 ``MCP-Protocol-Version`` 400 with -32022
naming only 2026-07-28 (and GET/DELETE 405), as a modern-only server does; ``legacy``
answers a POST with a 2026-07-28 version 400 "Unsupported protocol version", as a server of
the 2025 era does. Everything is logged to stderr; stdout carries only MCP messages in stdio
mode.

``sample``, ``elicit`` and ``roots`` use the SDK's ``Resolve`` markers, so they work in both
eras: on a handshake (<= 2025-11-25) session the SDK sends a real server-to-client request
tied to the tool call; on a 2026-07-28 session it returns ``input_required`` (MRTR) and the
client retries. Either way the SDK first checks that the client declared the capability
(-32021 MISSING_REQUIRED_CLIENT_CAPABILITY otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Annotated

from mcp import types
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    ListRoots,
    MCPServer,
    Resolve,
    Sample,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel, Field

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)  # logging is 2026-deprecated

server = MCPServer("sdk-test-server", version="1.0.0")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def size(text: str) -> int:
    """Return len(text)."""
    return len(text)


@server.tool()
def large(n: int) -> str:
    """Return a string of n 'x' characters."""
    return "x" * n


@server.tool()
def fail(message: str) -> str:
    """Raise, so the call returns isError with the message as its text."""
    raise ToolError(message)


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report progress 1..steps (total=steps), then return "done"."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return "done"


@server.tool()
async def log(message: str, ctx: Context, level: str = "info") -> str:
    """Emit one notifications/message with that data at that level."""
    await ctx.log(level, message)  # type: ignore[arg-type]
    return "logged"


def ask_sampling(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                  max_tokens=100)


@server.tool()
def sample(prompt: str, answer: Annotated[CreateMessageResult, Resolve(ask_sampling)]) -> str:
    """Ask the client for sampling; return the text of its answer."""
    content = answer.content
    return content.text if isinstance(content, TextContent) else str(content)


class Name(BaseModel):
    name: str


def ask_name(question: str) -> Elicit[Name]:
    return Elicit(question, Name)


@server.tool()
def elicit(question: str, outcome: Annotated[ElicitationResult[Name], Resolve(ask_name)]) -> str:
    """Elicit a {name} from the client; return "<action>:<name>"."""
    name = outcome.data.name if outcome.action == "accept" else ""
    return f"{outcome.action}:{name}"


def ask_roots() -> ListRoots:
    return ListRoots()


@server.tool()
def roots(listed: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
    """Ask the client for roots/list; return the root URIs joined by ","."""
    return ",".join(str(root.uri) for root in listed.roots)


@server.tool()
async def roots_standalone(ctx: Context) -> str:
    """Ask roots/list as SDK 1.x servers did (no related request): on streamable HTTP the
    request rides the GET stream, and is lost if that stream is not open yet."""
    listed = await ctx.session.list_roots()
    return ",".join(str(root.uri) for root in listed.roots)


@server.tool()
async def slow(seconds: float, mark: str = "") -> str:
    """Sleep, then return "slept"; when cancelled first, write "cancelled" to the file
    ``mark`` names (if any), so a test sees the cancellation reach the server."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if mark:
            Path(mark).write_text("cancelled")
        raise
    return "slept"


@server.tool()
def tagged(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    """Return the region (2026-07-28 clients also send it as the Mcp-Param-Region header)."""
    return region


@server.tool()
async def change(ctx: Context) -> str:
    """Publish tools/list_changed to every subscriptions/listen stream; return "changed"."""
    await ctx.notify_tools_changed()
    return "changed"


SUBSCRIBED: set[str] = set()  # the URIs a 2025-era session subscribed to


async def subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    """The 2025 era's resources/subscribe (the SDK serves only subscriptions/listen)."""
    SUBSCRIBED.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    SUBSCRIBED.discard(str(params.uri))
    return types.EmptyResult()


server._lowlevel_server.add_request_handler(  # noqa: SLF001 - no public door to it
    "resources/subscribe", types.SubscribeRequestParams, subscribe)
server._lowlevel_server.add_request_handler(  # noqa: SLF001
    "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)


@server.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Tell the subscribers of ``uri`` it changed (resources/updated): on
    subscriptions/listen, and to a 2025-era session that subscribed; return "touched"."""
    await ctx.notify_resource_updated(uri)
    if uri in SUBSCRIBED:
        await ctx.session.send_resource_updated(uri)
    return "touched"


@server.tool()
def crash() -> str:
    """Kill the process at once, without answering."""
    os._exit(3)


@server.tool()
def env(name: str) -> str:
    """Return the environment variable, or "<unset>"."""
    return os.environ.get(name, "<unset>")


@server.tool()
def cwd() -> str:
    """Return the working directory."""
    return os.getcwd()


@server.resource("memo://greeting")
def greeting() -> str:
    """A fixed text resource."""
    return "hello from a resource"


@server.prompt()
def greet(who: str) -> str:
    """A prompt that greets ``who``."""
    return f"Please greet {who}."


class RequireToken:
    """ASGI middleware: 401 for HTTP requests without ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"authorization") != self.expected:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"Unauthorized"})
            return
        await self.app(scope, receive, send)


HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")


class OneEra:
    """ASGI middleware: serve only one protocol era on /mcp (see ``--era``)."""

    def __init__(self, app, era: str) -> None:
        self.app, self.era = app, era

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        version = dict(scope.get("headers") or []).get(b"mcp-protocol-version", b"").decode()
        modern = bool(version) and version not in HANDSHAKE_VERSIONS
        if self.era == "modern" and not modern:
            if scope["method"] != "POST":
                await _reply(send, 405, b"", Allow=b"POST")
                return
            error = {"code": -32022, "message": "Unsupported protocol version: this server "
                     "speaks only 2026-07-28", "data": {"supported": ["2026-07-28"],
                                                        "requested": version or None}}
        elif self.era == "legacy" and modern:
            error = {"code": -32000, "message": "Bad Request: Unsupported protocol version "
                     f"(supported versions: {', '.join(HANDSHAKE_VERSIONS)})"}
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
        await _reply(send, 400, body)


async def _reply(send, status: int, body: bytes, **headers: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        *[(name.lower().encode(), value) for name, value in headers.items()]]})
    await send({"type": "http.response.body", "body": body})


def serve_http(mode: str, host: str, port: int, token: str | None, max_body: int,
               era: str = "both") -> None:
    import uvicorn

    if mode == "sse":
        app = server.sse_app(host=host, max_request_body_size=max_body)
    else:
        app = server.streamable_http_app(host=host, max_request_body_size=max_body)
    if era != "both":
        app = OneEra(app, era)
    if token:
        app = RequireToken(app, token)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    print(f"LISTENING {sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", nargs="?", default="stdio",
                        choices=["stdio", "sse", "streamable-http"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--require-token")
    parser.add_argument("--max-body", type=int, default=64 << 20)
    parser.add_argument("--era", choices=["both", "modern", "legacy"], default="both")
    opts = parser.parse_args()
    if opts.transport == "stdio":
        server.run("stdio")
    else:
        serve_http(opts.transport, opts.host, opts.port, opts.require_token, opts.max_body,
                   opts.era)


if __name__ == "__main__":
    main()
