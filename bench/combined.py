"""A call through a combined server vs the same call on the member's own path (issue 21).

One proxy, a config file of two raw_server members (``raw``, no prefix, so the call is the
same ``echo``; ``raw2``) and the combined server ``both`` of them. Two Streamable HTTP
sessions, one on ``/servers/raw/mcp`` and one on ``/servers/both/mcp`` (each with its own
raw_server process), and the same sequential small echo calls on each, in alternating rounds
so that drift in the machine's load hits both alike; p50 of each, and the difference. The
issue's target: at most +0.1 ms.

    python bench/combined.py [--calls 2000] [--rounds 5] [--warmup 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from clients import Proxy, StreamableSession
from measure import latency_samples, summary
from procs import PY, RAW_SERVER, Processes, log

TARGET_MS = 0.1


def combined_latency(procs: Processes, calls: int, rounds: int, warmup: int) -> dict:
    """p50 of echo calls on the member's own path and through the combined server."""
    raw = {"command": PY, "args": [str(RAW_SERVER)]}
    config = Path(tempfile.mkdtemp(prefix="mcp-proxy-combined-")) / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "raw": raw, "raw2": raw, "both": {"servers": ["raw", "raw2"], "prefix": {"raw": ""}}}}))
    proxy = Proxy(procs, "proxy-combined", ("--named-server-config", str(config)))
    sessions = {"member": StreamableSession(proxy.port, "/servers/raw/mcp"),
                "combined": StreamableSession(proxy.port, "/servers/both/mcp")}
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    try:
        for session in sessions.values():
            session.initialize()
            latency_samples(session, warmup)
        rid = 10_000
        for _ in range(rounds):
            for name, session in sessions.items():
                samples[name] += latency_samples(session, calls // rounds, rid)
                rid += calls
    finally:
        for session in sessions.values():
            session.close()
        proxy_code = procs.stop(proxy.proc)
    figures = {name: summary(values) for name, values in samples.items()}
    extra = figures["combined"]["p50_ms"] - figures["member"]["p50_ms"]
    return {**figures, "extra_p50_ms": extra, "target_ms": TARGET_MS,
            "passed": extra <= TARGET_MS, "proxy_exit_code": proxy_code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    opts = parser.parse_args()
    procs = Processes(Path(tempfile.mkdtemp(prefix="mcp-proxy-bench-")), False)
    try:
        result = combined_latency(procs, opts.calls, opts.rounds, opts.warmup)
    finally:
        procs.stop_all()
    for name in ("member", "combined"):
        log(f"{name:>9}: p50 {result[name]['p50_ms']:.3f} ms, p99 {result[name]['p99_ms']:.3f} ms "
            f"({result[name]['calls']} calls)")
    log(f"combined - member: {result['extra_p50_ms'] * 1000:+.0f} us p50 (target <= "
        f"+{TARGET_MS * 1000:.0f} us): {'PASS' if result['passed'] else 'FAIL'}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
