"""A stdio MCP server that speaks only 2026-07-28: the SDK fixture server behind a gate.

Usage: modern_only.py [--record FILE] [--discover ok|garbage|odd] [--endless]

The installed SDK (mcp 2.x) serves both eras on stdio (the first request decides), so this
stdlib gate in front of ``sdk_server.py stdio`` makes it modern-only: it refuses
``initialize`` itself with -32022 naming only 2026-07-28, as a modern-only server does, and
relays everything else both ways unchanged. ``--record`` appends each message the client
sent (initialize included) to FILE as a JSON line. Hostile modes: ``--discover garbage``
answers ``server/discover`` with a result that names no version; ``odd`` with one whose
capabilities, server info and ``_meta`` have the wrong types; ``--endless`` answers every
call of the tool ``endless`` with another ``input_required`` round, forever.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODERN = "2026-07-28"
ODD_DISCOVER = {"resultType": "complete", "supportedVersions": [MODERN], "capabilities": "all",
                "serverInfo": 7, "_meta": "none", "instructions": ["not", "text"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record")
    parser.add_argument("--discover", choices=["ok", "garbage", "odd"], default="ok")
    parser.add_argument("--endless", action="store_true")
    opts = parser.parse_args()
    child = subprocess.Popen([sys.executable, str(HERE / "sdk_server.py"), "stdio"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out = sys.stdout.buffer
    lock = threading.Lock()

    def write(obj: dict) -> None:
        with lock:
            out.write(json.dumps(obj).encode() + b"\n")
            out.flush()

    def pump() -> None:
        for line in child.stdout:
            with lock:
                out.write(line)
                out.flush()

    threading.Thread(target=pump, daemon=True).start()
    record = open(opts.record, "a") if opts.record else None  # noqa: SIM115
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if record is not None:
            record.write(json.dumps(message) + "\n")
            record.flush()
        method, params = message.get("method"), message.get("params") or {}
        if method == "initialize":
            write({"jsonrpc": "2.0", "id": message.get("id"), "error": {
                "code": -32022, "message": f"Unsupported protocol version: this server speaks "
                f"only {MODERN}", "data": {"supported": [MODERN],
                                           "requested": params.get("protocolVersion")}}})
            continue
        if method == "server/discover" and opts.discover != "ok":
            result = ODD_DISCOVER if opts.discover == "odd" else {"supportedVersions": "all"}
            write({"jsonrpc": "2.0", "id": message["id"], "result": result})
            continue
        if opts.endless and method == "tools/call" and params.get("name") == "endless":
            write({"jsonrpc": "2.0", "id": message["id"], "result": {
                "resultType": "input_required", "requestState": "again",
                "inputRequests": {"r": {"method": "roots/list"}}}})
            continue
        child.stdin.write(line)
        child.stdin.flush()
    child.stdin.close()
    child.wait(10)


if __name__ == "__main__":
    main()
