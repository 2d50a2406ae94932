"""User-space instructions per call of the proxy, counted by valgrind's callgrind.

    python bench/irproxy.py sse|streamable|client|client-sse [N1 N2]   # default 100 400
    python bench/irproxy.py modern|bridge-a|bridge-b|client-bridge|client-modern [N1 N2]
    TREE=/path/to/checkout SIZE=1048576 python bench/irproxy.py streamable 2 10

Wall-clock A/B runs need a quiet machine; instruction counts do not depend on the load, so
they judge a change on a shared one. The proxy (from ``TREE``, default this checkout) runs
under callgrind: ``sse`` and ``streamable`` are server mode over raw_server, driven over
HTTP; ``client`` and ``client-sse`` are client mode (``--transport streamablehttp`` to /mcp,
resp. ``sse`` to /sse), driven over its stdin and stdout, in front of a server-mode proxy
(this checkout's, over raw_server, not under valgrind: its cost is not counted, and it stays
the same when ``TREE`` changes). The era bridges (issue 25, bench/eras.py): ``modern`` is
2026-07-28 requests to server mode over raw_server (its lane), ``bridge-a`` the same requests
to raw_server ``--legacy-only`` (the modern->legacy bridge), ``bridge-b`` a 2025 session to
raw_server ``--modern-only`` (the legacy->modern bridge: compare with ``streamable``);
``client-bridge`` is a 2025 client through client mode with ``--protocol-era modern`` (its
bridge), ``client-modern`` a 2026-07-28 client through client mode (relayed: the same remote
work). One session makes 50 warm-up calls, then N echo calls of
``SIZE`` bytes of text. Ir per call = (Ir(N2) - Ir(N1)) / (N2 - N1): start-up and shutdown
cancel out. The kernel's work (socket and pipe copies, epoll) is not counted. Needs Debian's
``valgrind``; a run takes a few minutes (callgrind runs the proxy ~50x slower).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from client_ab import client_argv
from clients import (
    ModernSession,
    ModernStdioSession,
    Proxy,
    SseSession,
    StdioSession,
    StreamableSession,
)
from measure import EchoCall
from procs import PY, RAW_SERVER, ROOT, Processes

TREE = Path(os.environ.get("TREE", ROOT))
KINDS = ("sse", "streamable", "client", "client-sse", "modern", "bridge-a", "bridge-b",
         "client-bridge", "client-modern")
# server mode: the stdio server's flags and the session; client mode: its flags and client
SERVERS = {"sse": ((), SseSession), "streamable": ((), StreamableSession),
           "modern": ((), ModernSession), "bridge-a": (("--legacy-only",), ModernSession),
           "bridge-b": (("--modern-only",), StreamableSession)}
CLIENTS = {"client": ((), StdioSession), "client-sse": ((), StdioSession),
           "client-bridge": (("--protocol-era", "modern"), StdioSession),
           "client-modern": ((), ModernStdioSession)}
# the remote's ping comments come per second, not per call: none within a run
REMOTE_KEEPALIVE = "3600"


def valgrind(log: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            f"--log-file={log}"]


def server_session(log: Path, kind: str) -> tuple[subprocess.Popen, StreamableSession | SseSession]:
    """The server-mode proxy under valgrind, and an HTTP session with it."""
    flags, session_class = SERVERS[kind]
    argv = [*valgrind(log), PY, "-m", "mcp_proxy", "--port", "0", "--host", "127.0.0.1",
            "--max-body-size", "32MiB", "--", PY, str(RAW_SERVER), *flags]
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
    session = session_class(port)
    session.initialize()
    return proc, session


def instructions(kind: str, calls: int, size: int, procs: Processes,
                 remote: Proxy | None) -> int:
    log = Path(f"/tmp/irproxy-{os.getpid()}-{calls}.log")
    if remote:  # client mode: the bench is its stdio client
        transport = "sse" if kind == "client-sse" else "streamable"
        flags, session_class = CLIENTS[kind]
        argv = client_argv(str(TREE), transport, remote)
        session = session_class(procs, [*valgrind(log), *argv[:-1], *flags, argv[-1]], kind)
        session.initialize()
    else:
        proc, session = server_session(log, kind)
    echo = EchoCall(size)
    for rid in [*range(1, 51), *range(100, 100 + calls)]:
        echo.check(rid, session.call(echo.body(rid)))
    if remote:  # it ends on EOF; under valgrind that takes longer than procs.stop waits
        session.proc.stdin.close()
        session.proc.wait(300)
        session.close()
    else:
        session.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    text = log.read_text()
    log.unlink()
    return int(re.search(r"Collected : (\d+)", text).group(1))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in KINDS:
        print(__doc__, file=sys.stderr)
        return 2
    kind = argv[0]
    n1, n2 = (int(a) for a in argv[1:3]) if len(argv) >= 3 else (100, 400)
    size = int(os.environ.get("SIZE", "0"))
    os.environ["PYTHONHASHSEED"] = "0"  # the client-mode proxy inherits the bench's env
    procs = Processes(Path(tempfile.mkdtemp(prefix="mcp-proxy-irproxy-")), False)
    try:
        remote = Proxy(procs, "remote", ("--keepalive", REMOTE_KEEPALIVE)) \
            if kind.startswith("client") else None
        per_call = (instructions(kind, n2, size, procs, remote)
                    - instructions(kind, n1, size, procs, remote)) / (n2 - n1)
    finally:
        procs.stop_all()
    print(f"{TREE.name} {kind} {size or 'small'}: {per_call / 1000:,.0f} k Ir per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
