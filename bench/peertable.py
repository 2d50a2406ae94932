"""The peers table: each figure of ours beside mcp-proxy 0.13's and supergateway's.

``peer_lines`` turns ``results["peers"]`` (peers.py) and our own figures of the same run
into a Markdown table (ours, each peer, ours ÷ best peer), the reasons for every figure a
peer could not give, and the CPU of each peer's throughput run, the load client's included.
"""

from __future__ import annotations

from peers import PEERS
from procs import MiB
from report import fmt, markdown

PATHS = ("server/sse", "server/streamable", "client/sse", "client/streamable")


def figures(path: str) -> list[tuple[str, tuple[str, ...], bool, int]]:
    """(label, keys into a path's figures, higher is better, digits) of one path."""
    out = [("echo latency p50 (ms)", ("latency", "p50_ms"), False, 3),
           ("echo latency p99 (ms)", ("latency", "p99_ms"), False, 3)]
    if path.startswith("server/"):
        out.append(("calls/s, 20 sessions", ("throughput_20", "calls_per_s"), True, 0))
    out += [(f"{n} MiB round trip (ms)", ("round_trip", str(n * MiB), "median_ms"), False, 1)
            for n in (1, 10)]
    if path.startswith("client/"):
        out.append(("client start -> initialize (ms)", ("startup", "median_ms"), False, 0))
    return out


def dig(figs: dict, keys: tuple[str, ...]):
    """The figure, or ``(None, reason)`` when the peer could not give it."""
    node = figs
    for key in keys:
        if not isinstance(node, dict):
            return None, "not measured"
        if "na" in node or "error" in node:
            return None, node.get("na") or node["error"]
        if key not in node:
            return None, "not measured"
        node = node[key]
    return node, ""


def peer_lines(results: dict) -> list[str]:
    peers = results["peers"]
    ours = results["paths"]
    body, reasons = [], {}
    for path in PATHS:
        for label, keys, higher, digits in figures(path):
            mine, _ = dig(ours.get(path, {}), keys)
            cells, values = [], []
            for peer in PEERS:
                value, why = dig(peers.get(peer, {}).get("paths", {}).get(path, {}), keys)
                if value is None:
                    mark = reasons.setdefault(why, len(reasons) + 1)
                    cells.append(f"n/a [{mark}]")
                else:
                    cells.append(fmt(float(value), digits))
                    values.append(value)
            best = (max if higher else min)(values) if values else None
            ratio = f"{mine / best:.2f}" if mine is not None and best else "—"
            body.append([label, path, fmt(None if mine is None else float(mine), digits),
                         *cells, ratio])
    versions = ", ".join(f"{p} = {peers[p]['version']}" for p in PEERS if p in peers)
    out = [f"Peers ({versions}); the same load client and raw_server; client mode against "
           "our server-mode proxy. ours ÷ best peer: below 1 is better for times, above 1 "
           "for calls/s",
           markdown(["figure", "path", "ours", *PEERS, "ours ÷ best peer"], body, {2, 3, 4, 5})]
    out += [f"  [{n}] {why}" for why, n in reasons.items()]
    out.append("CPU during the peers' throughput runs (100% = one core):")
    for peer in PEERS:
        for path in PATHS[:2]:
            tp = peers.get(peer, {}).get("paths", {}).get(path, {}).get("throughput_20", {})
            if "calls_per_s" in tp:
                out.append(f"  {peer:<15} {path:<18} {tp['calls_per_s']:>6,.0f} calls/s, p50 "
                           f"{tp['p50_ms']:.2f} ms p99 {tp['p99_ms']:.2f} ms; CPU peer "
                           f"{tp['cpu_proxy_pct']:.0f}%, {tp['servers']} servers "
                           f"{tp['cpu_servers_pct']:.0f}%, load client "
                           f"{tp['cpu_bench_pct']:.0f}%, machine {tp['machine_busy_pct']:.0f}% "
                           f"busy; RSS peer {tp['proxy_rss_mib']:.0f} MiB")
    return out
