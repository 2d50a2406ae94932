#!/usr/bin/env python3
"""A/B of client mode: two (or more) copies of mcp_proxy, measured in interleaved rounds.

    git archive main mcp_proxy | tar -x -C /tmp/old
    python bench/client_ab.py old=/tmp/old new=. [--rounds 4] [--calls 1000] [--profile DIR]

One server-mode proxy (this checkout's) over raw_server is the remote. Each round measures,
per variant (their order alternating from round to round) and per transport, the echo latency
of the remote itself (the bench's raw HTTP client), then of a client-mode process of that
variant in front of it, and the client process's CPU per call (``/proc/PID/stat``). Machine
noise then hits every variant alike; the medians over the rounds are printed at the end.
``--profile DIR`` py-spies each client process (``DIR/VARIANT-TRANSPORT-ROUND.txt``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from clients import KEEPALIVE, Proxy, SseSession, StdioSession, StreamableSession
from measure import latency_samples, summary
from procs import CLK_TCK, PY, Processes, proc_stat, profiled


def client_argv(root: str, transport: str, proxy: Proxy) -> list[str]:
    # -c with the variant first on sys.path: ``-m`` would put the working directory first
    code = (f"import sys; sys.path.insert(0, {str(Path(root).resolve())!r}); "
            "from mcp_proxy.cli import main; raise SystemExit(main())")
    args = ["--transport", "sse", f"{proxy.url}/sse"] if transport == "sse" else \
        ["--transport", "streamablehttp", f"{proxy.url}/mcp"]
    return [PY, "-c", code, *args]


def measure(opts, procs: Processes, proxy: Proxy, name: str, root: str, transport: str,
            round_no: int) -> tuple[float, float, float]:
    """(client p50, remote p50, client CPU ms per call)."""
    remote = SseSession(proxy.port) if transport == "sse" else StreamableSession(proxy.port)
    try:
        remote.initialize()
        latency_samples(remote, opts.warmup)
        remote_p50 = summary(latency_samples(remote, opts.calls))["p50_ms"]
    finally:
        remote.close()
    client = StdioSession(procs, client_argv(root, transport, proxy), f"{name}-{transport}")
    try:
        client.initialize()
        latency_samples(client, opts.warmup)
        before = proc_stat(client.proc.pid)
        with profiled(opts, f"{name}-{transport}-{round_no}", client.proc.pid):
            client_p50 = summary(latency_samples(client, opts.calls, 5000))["p50_ms"]
        after = proc_stat(client.proc.pid)
    finally:
        client.close()
    proxy.wait_sessions(0)
    return client_p50, remote_p50, (after[1] - before[1]) / CLK_TCK * 1000 / opts.calls


def main() -> int:
    parser = argparse.ArgumentParser(description="A/B of client mode between checkouts.")
    parser.add_argument("variants", nargs="+", metavar="NAME=DIR",
                        help="a name and the directory holding that copy's mcp_proxy/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the client processes")
    opts = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in opts.variants]
    procs = Processes(Path(tempfile.mkdtemp(prefix="mcp-proxy-client-ab-")), False)
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        proxy = Proxy(procs, "proxy", ("--keepalive", str(KEEPALIVE)))
        for round_no in range(opts.rounds):
            for name, root in variants if round_no % 2 == 0 else variants[::-1]:
                for transport in ("sse", "streamable"):
                    got = measure(opts, procs, proxy, name, root, transport, round_no)
                    rows.setdefault((transport, name), []).append(got)
                    print(f"round {round_no} {name:>8} {transport:<10} client p50 {got[0]:.3f}"
                          f" remote p50 {got[1]:.3f} added {got[0] - got[1]:+.3f} "
                          f"CPU {got[2]:.3f} ms/call", flush=True)
    finally:
        procs.stop_all()
    print(f"\nmedians over {opts.rounds} rounds (ms): transport, variant, client p50, remote "
          "p50, added p50 (range), client CPU per call")
    for (transport, name), got in sorted(rows.items()):
        added = [c - r for c, r, _ in got]
        print(f"{transport:<10} {name:>8}  {statistics.median(g[0] for g in got):.3f}  "
              f"{statistics.median(g[1] for g in got):.3f}  {statistics.median(added):+.3f} "
              f"({min(added):+.3f} to {max(added):+.3f})  "
              f"{statistics.median(g[2] for g in got):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
