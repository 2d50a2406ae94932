"""Wrap a stdio MCP server so that it speaks only the 2025 era: a legacy-only fixture.

Usage: legacy_only.py COMMAND [ARG ...]

Runs COMMAND and relays stdin and stdout line by line, except that a request whose params
carry the 2026-07-28 ``_meta`` envelope (``server/discover`` first of all) is answered here
with -32601 and never reaches the server, as a server of the 2025 era answers it. The
official SDK's stdio server speaks both eras (it picks one on its first request); behind
this wrapper it only ever sees ``initialize`` first, so its session is a 2025-era one.
Stdlib only; stderr is the server's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

ENVELOPE = "io.modelcontextprotocol/protocolVersion"


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    lock = threading.Lock()
    out = sys.stdout.buffer

    def write(line: bytes) -> None:
        with lock:
            out.write(line)
            out.flush()

    def pump() -> None:
        for line in child.stdout:
            write(line)

    threading.Thread(target=pump, daemon=True).start()
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if "id" in (message or {}) and (
                message.get("method") == "server/discover"
                or (isinstance(meta, dict) and ENVELOPE in meta)):
            write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32601, "message": "Method not found"}}).encode() + b"\n")
            continue
        child.stdin.write(line)
        child.stdin.flush()
    child.stdin.close()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
