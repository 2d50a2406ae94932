"""A tiny stdio JSON-RPC "MCP server" with no SDK: stdlib only, fast start-up, fast echo.

One JSON message per line on stdin/stdout; stdout is written in binary and flushed after
every message. It answers ``initialize`` (echoing the client's protocolVersion), ``ping``,
``tools/list`` (one tool, ``echo``) and ``tools/call`` (``echo``, and ``ask``, which sends a
``sampling/createMessage`` request to the client and returns the client's result as JSON
text; with ``delay`` it waits that long first), ``notify``, which answers and then sends
``count`` log notifications of ``size`` bytes at ``level`` that belong to no request,
``progress``, which reports ``steps`` progress notifications with the request's token before
its answer, ``update``, which answers and then sends ``resources/updated`` for ``uri``,
``crash``, which exits with code 3 at once, and ``environ``, which returns its environment as
JSON text). ``resources/subscribe``, ``unsubscribe`` and ``logging/setLevel`` are answered
with ``{}``. Notifications are ignored; any other request gets -32601.

The 2026-07-28 era too (its ``_meta`` envelope is ignored): ``server/discover`` (unless
``--legacy-only``), ``subscriptions/listen`` (acknowledged; ``tools/call change`` then sends
``tools/list_changed`` to every listen, ``notifications/cancelled`` ends one), ``tools/call
hold``, which never answers (cancelled or not, as the TypeScript SDK does), ``tools/call
late``, which answers after ``seconds`` whether cancelled or not, ``tools/call mrtr``, which answers
``input_required`` (with its ``pad`` argument) and then holds the retry, and ``tools/list``
also names ``tagged``, a tool whose ``region`` argument has an ``x-mcp-header``, ``nested``,
whose ``place.region`` has one, and ``miscast``, whose annotation is invalid (both answer
their arguments).

Options (for exercising a proxy's failure handling):

  --garbage            print a non-JSON line on stdout before every response
  --slow SECONDS       delay every response
  --exit-after N       exit with code 5 on receiving the N-th request, without answering it
  --huge-line BYTES    on tools/call, first emit a notifications/message whose data is that big
  --stderr-banner      write a line to stderr at start
  --ignore-stdin-eof   keep running after stdin closes, and ignore SIGTERM
  --record FILE        append every line read from stdin to FILE (what the server was sent)
  --legacy-only        answer server/discover with -32601, as a server of the 2025 era does
  --modern-only        refuse initialize with -32022 naming only 2026-07-28, as a server of
                       that era alone does (everything else is served as usual)
  --changes            offer tools listChanged and resources subscribe in initialize; then
                       ``tools/call change`` also sends a plain tools/list_changed (2025 era),
                       and tools/list names ``update`` and ``change`` too
  --fail-list          answer tools/list with -32603
  --announce           write notifications/tools/list_changed right after the initialize
                       answer, in the same write (a server message that belongs to no request)
  --stuck LINES        write LINES numbered lines to stderr (as npm retrying a TLS error
                       does), then read stdin until it closes and answer nothing
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import deque

SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
TAGGED_TOOL = {
    "name": "tagged",
    "description": "Return the region, which clients also send as the Mcp-Param-Region header.",
    "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}},
}
NESTED_TOOL = {  # an x-mcp-header below the top level: Mcp-Param-Zone is place.region
    "name": "nested",
    "inputSchema": {"type": "object", "properties": {"place": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Zone"}}}}},
}
MISCAST_TOOL = {  # invalid: an x-mcp-header on a number (clients must drop the tool)
    "name": "miscast",
    "inputSchema": {"type": "object", "properties": {
        "ratio": {"type": "number", "x-mcp-header": "Ratio"}}},
}
ECHO_TOOL = {
    "name": "echo",
    "description": "Return the text unchanged.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                    "required": ["text"]},
}

CHANGE_TOOLS = [{"name": "update", "inputSchema": {"type": "object", "properties": {
    "uri": {"type": "string"}}}}, {"name": "change", "inputSchema": {"type": "object"}}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--huge-line", type=int, default=0)
    parser.add_argument("--stderr-banner", action="store_true")
    parser.add_argument("--ignore-stdin-eof", action="store_true")
    parser.add_argument("--announce", action="store_true")
    parser.add_argument("--record", default=None)
    parser.add_argument("--legacy-only", action="store_true")
    parser.add_argument("--modern-only", action="store_true")
    parser.add_argument("--changes", action="store_true")
    parser.add_argument("--fail-list", action="store_true")
    parser.add_argument("--stuck", type=int, default=None)
    opts = parser.parse_args()

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    backlog: deque = deque()  # messages read while waiting for a client's answer
    requests_seen = 0
    listens: set[str] = set()  # ids (as JSON) of open subscriptions/listen requests
    server_ids = 0

    if opts.ignore_stdin_eof:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if opts.stderr_banner:
        sys.stderr.write("raw_server: started (stderr banner)\n")
        sys.stderr.flush()
    if opts.stuck is not None:
        for n in range(1, opts.stuck + 1):
            sys.stderr.write(f"npm http fetch GET https://registry.npmjs.org/x attempt {n} "
                             f"failed: UNABLE_TO_GET_ISSUER_CERT_LOCALLY\n")
        sys.stderr.flush()
        for _ in stdin:
            pass
        return

    def send(*messages: dict) -> None:
        stdout.write(b"".join(dumps(message).encode() + b"\n" for message in messages))
        stdout.flush()

    def respond(*messages: dict) -> None:
        if opts.slow:
            time.sleep(opts.slow)
        if opts.garbage:
            stdout.write(b"hello this is not json\n")
        send(*messages)

    def read() -> dict | None:
        """The next message (backlog first); None at EOF. Unparseable lines get -32700."""
        if backlog:
            return backlog.popleft()
        while True:
            line = stdin.readline()
            if not line:
                return None
            if opts.record:
                with open(opts.record, "ab") as record:
                    record.write(line if line.endswith(b"\n") else line + b"\n")
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                respond({"jsonrpc": "2.0", "id": None,
                         "error": {"code": -32700, "message": "Parse error"}})
                continue
            if isinstance(message, dict):
                return message
            respond({"jsonrpc": "2.0", "id": None,
                     "error": {"code": -32600, "message": "Invalid Request"}})

    def ask_client(params: dict) -> dict:
        """Send a sampling request to the client and wait for the response with its id."""
        nonlocal server_ids
        time.sleep(float(params.get("delay", 0)))
        server_ids += 1
        sid = f"srv-{server_ids}"
        send({"jsonrpc": "2.0", "id": sid, "method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {
                "type": "text", "text": str(params.get("prompt", "hello"))}}],
            "maxTokens": 100}})
        held = []
        try:
            while True:
                message = read()
                if message is None:
                    return {"error": "stdin closed"}
                if message.get("id") == sid and "method" not in message:
                    return message.get("result", {"error": message.get("error")})
                held.append(message)
        finally:
            backlog.extend(held)

    while True:
        message = read()
        if message is None:
            break
        method = message.get("method")
        if method == "notifications/cancelled":
            listens.discard(json.dumps((message.get("params") or {}).get("requestId")))
        if "id" not in message or method is None:
            continue  # notifications and stray responses are ignored
        requests_seen += 1
        if opts.exit_after and requests_seen >= opts.exit_after:
            stdout.flush()
            sys.exit(5)
        params = message.get("params") or {}
        reply: dict = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "initialize" and opts.modern_only:
            reply["error"] = {"code": -32022, "message": "Unsupported protocol version: this "
                              "server speaks only 2026-07-28", "data": {
                                  "supported": ["2026-07-28"],
                                  "requested": params.get("protocolVersion")}}
        elif method == "initialize":
            reply["result"] = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}, "logging": {},
                                 "resources": {"subscribe": True}} if opts.changes else
                {"tools": {}, "logging": {}},
                "serverInfo": {"name": "raw_server", "version": "1.0.0"},
            }
        elif method in ("ping", "resources/subscribe", "resources/unsubscribe",
                        "logging/setLevel"):
            reply["result"] = {}
        elif method == "tools/list" and opts.fail_list:
            reply["error"] = {"code": -32603, "message": "listing failed"}
        elif method == "tools/list":
            reply["result"] = {"tools": [ECHO_TOOL, TAGGED_TOOL, NESTED_TOOL, MISCAST_TOOL,
                                         *(CHANGE_TOOLS if opts.changes else ())]}
        elif method == "server/discover" and not opts.legacy_only:
            reply["result"] = {"supportedVersions": ["2026-07-28"], "resultType": "complete",
                               "capabilities": {"tools": {"listChanged": True}},
                               "serverInfo": {"name": "raw_server", "version": "1.0.0"}}
        elif method == "subscriptions/listen":
            listens.add(json.dumps(message["id"]))
            send({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                  "params": {"_meta": {SUBSCRIPTION: message["id"]}}})
            continue
        elif method == "tools/call":
            name, args = params.get("name"), params.get("arguments") or {}
            if opts.huge_line:
                send({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": "x" * opts.huge_line}})
            if name == "echo":
                reply["result"] = {"content": [{"type": "text", "text": args.get("text", "")}]}
            elif name == "ask":
                answer = ask_client(args)
                reply["result"] = {"content": [{"type": "text", "text": json.dumps(answer)}]}
            elif name == "notify":
                respond({**reply, "result": {"content": []}})
                for n in range(int(args.get("count", 1))):
                    send({"jsonrpc": "2.0", "method": "notifications/message", "params": {
                        "level": args.get("level", "info"),
                        "data": f"{n}:" + "x" * int(args.get("size", 10))}})
                continue
            elif name == "progress":
                token = (params.get("_meta") or {}).get("progressToken")
                for step in range(int(args.get("steps", 1))):
                    if token is not None:
                        send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                            "progressToken": token, "progress": step + 1}})
                reply["result"] = {"content": [{"type": "text", "text": "done"}]}
            elif name == "update":
                respond({**reply, "result": {"content": []}})
                send({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                      "params": {"uri": args.get("uri")}})
                continue
            elif name == "crash":
                sys.exit(3)
            elif name == "hold":
                continue  # no answer, not even to a cancel
            elif name == "late":
                time.sleep(float(args.get("seconds", 0.5)))  # a cancel meanwhile is not read
                reply["result"] = {"content": [{"type": "text", "text": "late"}]}
            elif name == "mrtr":
                if "requestState" in params:
                    continue  # the retry is held like ``hold``
                reply["result"] = {"resultType": "input_required", "requestState": "mrtr-1",
                                   "inputRequests": {"q": {"method": "roots/list"}},
                                   "pad": args.get("pad", "")}  # a large answer if asked
            elif name == "environ":
                reply["result"] = {"content": [{"type": "text", "text": json.dumps(
                    dict(os.environ))}]}
            elif name == "tagged":
                reply["result"] = {"content": [{"type": "text", "text": args.get("region", "")}]}
            elif name in ("nested", "miscast"):
                reply["result"] = {"content": [{"type": "text", "text": json.dumps(args)}]}
            elif name == "change":
                respond({**reply, "result": {"content": []}})
                if opts.changes:
                    send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                for listen in listens:
                    send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                          "params": {"_meta": {SUBSCRIPTION: json.loads(listen)}}})
                continue
            else:
                reply["error"] = {"code": -32602, "message": f"Unknown tool: {name}"}
        else:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        if opts.announce and method == "initialize":
            respond(reply, {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        else:
            respond(reply)

    if opts.ignore_stdin_eof:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
