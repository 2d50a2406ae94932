"""User-space instructions per call of the server-mode proxy, counted by valgrind's callgrind.

    python bench/irproxy.py sse|streamable [N1 N2]   # default 100 400
    TREE=/path/to/checkout SIZE=1048576 python bench/irproxy.py streamable 2 10

Wall-clock A/B runs need a quiet machine; instruction counts do not depend on the load, so
they judge a change on a shared one. The proxy (from ``TREE``, default this checkout) runs
under callgrind over raw_server; one session makes 50 warm-up calls, then N echo calls of
``SIZE`` bytes of text. Ir per call = (Ir(N2) - Ir(N1)) / (N2 - N1): start-up and shutdown
cancel out. The kernel's work (socket and pipe copies, epoll) is not counted. Needs Debian's
``valgrind``; a run takes about a minute (callgrind runs the proxy ~50x slower).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from clients import SseSession, StreamableSession
from measure import EchoCall
from procs import PY, RAW_SERVER, ROOT

TREE = Path(os.environ.get("TREE", ROOT))


def instructions(kind: str, calls: int, size: int) -> int:
    log = Path(f"/tmp/irproxy-{os.getpid()}-{calls}.log")
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            f"--log-file={log}", PY, "-m", "mcp_proxy", "--port", "0", "--host", "127.0.0.1",
            "--max-body-size", "32MiB", "--", PY, str(RAW_SERVER)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(TREE)}
    proc = subprocess.Popen(argv, cwd=TREE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    port, deadline, seen = None, time.monotonic() + 400, []
    for line in proc.stderr:
        seen.append(line)
        found = re.search(r"Status at http://127\.0\.0\.1:(\d+)/status", line)
        if found or time.monotonic() > deadline:
            port = found and int(found.group(1))
            break
    if not port:
        proc.kill()
        raise SystemExit("the proxy did not start under valgrind:\n" + "".join(seen[-20:]))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    session = StreamableSession(port) if kind == "streamable" else SseSession(port)
    session.initialize()
    echo = EchoCall(size)
    for rid in range(1, 51):
        session.call(echo.body(rid))
    for rid in range(100, 100 + calls):
        session.call(echo.body(rid))
    session.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(300)
    text = log.read_text()
    log.unlink()
    return int(re.search(r"Collected : (\d+)", text).group(1))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sse", "streamable"):
        print(__doc__, file=sys.stderr)
        return 2
    n1, n2 = (int(a) for a in argv[1:3]) if len(argv) >= 3 else (100, 400)
    size = int(os.environ.get("SIZE", "0"))
    per_call = (instructions(argv[0], n2, size) - instructions(argv[0], n1, size)) / (n2 - n1)
    print(f"{TREE.name} {argv[0]} {size or 'small'}: {per_call / 1000:,.0f} k Ir per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
