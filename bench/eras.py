"""A call bridged between protocol eras vs the same call where both ends speak one (issue 25).

One server-mode proxy with three named servers, each the same raw_server: ``dual`` (both
eras), ``legacy`` (``--legacy-only``: the 2025 era alone) and ``modern`` (``--modern-only``:
2026-07-28 alone). Three pairs of sessions; the two of a pair make the same sequential small
echo calls in alternating rounds, their order swapped every round, so that drift in the
machine's load hits both alike:

  server-a  a 2026-07-28 client (stateless requests, the ``_meta`` envelope) on
            /servers/legacy/mcp: the modern->legacy bridge (children/legacy_adapter.py), vs
            the same client on /servers/dual/mcp (the 2026-07-28 lane, no bridge)
  server-b  a 2025 client (a session) on /servers/modern/mcp: the legacy->modern bridge
            (children/modern_child.py), vs the same client on /servers/dual/mcp
  client    a 2025 desktop client on the stdio of ``mcp-proxy --protocol-era modern URL``:
            client mode's bridge (client/fallforward.py) at once, as after its probe found a
            modern-only remote, vs the same client through ``mcp-proxy URL`` (relayed, a
            session of the remote); URL is /servers/dual/mcp of the proxy above. A third
            session, a 2026-07-28 desktop client through ``mcp-proxy URL`` (relayed), makes
            the remote do what it does for the bridged call, and so splits the difference
            into the remote's share (its 2026-07-28 lane instead of a session) and the
            bridge's own.

Each pair's figures: p50, p99 and calls/s of one sequential session, the p50 difference and
the issue's bound, at most +0.1 ms. A pair over the bound says FAIL; the bench's exit code
does not change.

    python bench/eras.py [--calls 2000] [--rounds 10] [--warmup 200] [--only server-a ...]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from clients import (
    KEEPALIVE,
    ModernSession,
    ModernStdioSession,
    Proxy,
    StdioSession,
    StreamableSession,
)
from measure import latency_samples, summary
from procs import PY, RAW_SERVER, BenchError, Processes, log
from report import era_lines

TARGET_MS = 0.1
PAIRS = ("server-a", "server-b", "client")
TITLES = {
    "server-a": "server mode, 2026-07-28 client -> 2025-only child",
    "server-b": "server mode, 2025 client -> 2026-07-28-only child",
    "client": "client mode, 2025 client -> 2026-07-28-only remote",
}


def named_servers() -> Path:
    """The proxy's config file: the same raw_server, dual-era and narrowed to each era."""
    def raw(*flags: str) -> dict:
        return {"command": PY, "args": [str(RAW_SERVER), *flags]}

    config = Path(tempfile.mkdtemp(prefix="mcp-proxy-eras-")) / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "dual": raw(), "legacy": raw("--legacy-only"), "modern": raw("--modern-only")}}))
    return config


def client_mode(procs: Processes, url: str, name: str, *flags: str, modern: bool = False):
    argv = [PY, "-m", "mcp_proxy", "--transport", "streamablehttp", *flags, url]
    return (ModernStdioSession if modern else StdioSession)(procs, argv, name)


def interleaved(sessions: dict, calls: int, rounds: int, warmup: int) -> dict[str, list]:
    """Each session's samples: warm-up, then ``rounds`` rounds of ``calls // rounds`` calls
    each, the sessions' order reversed every other round."""
    for session in sessions.values():
        session.initialize()
        latency_samples(session, warmup)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    rid = 10_000
    for n in range(rounds):
        for name in order if n % 2 == 0 else reversed(order):
            samples[name] += latency_samples(sessions[name], calls // rounds, rid)
            rid += calls
    return samples


def figures(samples: list[float]) -> dict:
    out = summary(samples)
    out["calls_per_s"] = len(samples) / (sum(samples) / 1000)
    return out


def measure_pair(procs: Processes, proxy: Proxy, pair: str, calls: int, rounds: int,
                 warmup: int) -> dict:
    """One pair's sessions, measured and closed: ``bridged``, ``same_era`` (and for client
    mode ``modern_relayed``)."""
    base = f"{proxy.url}/servers"
    if pair == "server-a":
        sessions = {"bridged": ModernSession(proxy.port, "/servers/legacy/mcp"),
                    "same_era": ModernSession(proxy.port, "/servers/dual/mcp")}
    elif pair == "server-b":
        sessions = {"bridged": StreamableSession(proxy.port, "/servers/modern/mcp"),
                    "same_era": StreamableSession(proxy.port, "/servers/dual/mcp")}
    else:
        sessions = {}
        for name, flags, modern in (("bridged", ("--protocol-era", "modern"), False),
                                    ("same_era", (), False), ("modern_relayed", (), True)):
            sessions[name] = client_mode(procs, f"{base}/dual/mcp", f"client-era-{name}",
                                         *flags, modern=modern)
    try:
        samples = interleaved(sessions, calls, rounds, warmup)
    finally:
        for session in sessions.values():
            session.close()
    out = {name: figures(values) for name, values in samples.items()}
    extra = out["bridged"]["p50_ms"] - out["same_era"]["p50_ms"]
    out.update(title=TITLES[pair], rounds=rounds, extra_p50_ms=extra, target_ms=TARGET_MS,
               passed=extra <= TARGET_MS)
    if "modern_relayed" in out:
        out["remote_share_p50_ms"] = out["modern_relayed"]["p50_ms"] - out["same_era"]["p50_ms"]
        out["bridge_share_p50_ms"] = out["bridged"]["p50_ms"] - out["modern_relayed"]["p50_ms"]
    return out


def era_bridges(procs: Processes, calls: int, rounds: int, warmup: int,
                pairs: tuple[str, ...] = PAIRS) -> dict:
    """Every pair of ``pairs`` on one proxy (see the module docstring)."""
    proxy = Proxy(procs, "proxy-eras", ("--keepalive", str(KEEPALIVE),
                                        "--named-server-config", str(named_servers())))
    results = {}
    try:
        for pair in pairs:
            log(f"era bridges: {TITLES[pair]}, vs the same era")
            results[pair] = measure_pair(procs, proxy, pair, calls, rounds, warmup)
    finally:
        results["proxy_exit_code"] = proxy.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="per session (default 2000)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--only", choices=PAIRS, action="append",
                        help="measure only this pair (repeatable)")
    opts = parser.parse_args()
    if opts.calls < opts.rounds or opts.rounds < 1 or opts.warmup < 0:
        parser.error("--calls must be at least --rounds, --rounds at least 1, --warmup >= 0")
    procs = Processes(Path(tempfile.mkdtemp(prefix="mcp-proxy-bench-")), False)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)  # so that every process it started is stopped
    try:
        result = era_bridges(procs, opts.calls, opts.rounds, opts.warmup,
                             tuple(opts.only or PAIRS))
    except (BenchError, OSError, KeyboardInterrupt) as exc:
        log(f"era bridges aborted: {exc!r}; process logs in {procs.logdir}")
        return 1
    finally:
        procs.stop_all()
    print(json.dumps(result, indent=2))
    print("\n".join(era_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
