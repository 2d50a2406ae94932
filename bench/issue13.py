"""Issue 13's targets: the verdicts of one run, or the spread over several runs.

``target_lines(results)`` is printed after the main table of every run; run as a script,
``python bench/issue13.py RUN1.json RUN2.json ...`` prints each target's range over the runs
(``bench/run.py --json`` writes one file per run), ours beside the best peer where the runs
had ``--peers``. A peer's "client adds" is its client-mode p50 minus our server-mode p50 of
the same run: every client mode talks to that same remote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from peers import PEERS
from procs import MiB
from report import fmt, markdown


def _get(node: dict, *keys):
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _minus(a, b):
    return None if a is None or b is None else a - b


def _ratio(a, b):
    return None if a is None or not b else a / b


def _best(values: list, higher: bool):
    values = [v for v in values if v is not None]
    return (max if higher else min)(values) if values else None


def _peer_paths(results: dict) -> list[dict]:
    peers = results.get("peers") or {}
    return [peers[p].get("paths", {}) for p in PEERS if p in peers]


def rows(results: dict) -> list[tuple[str, str, float | None, float | None, str, bool]]:
    """(figure, path, ours, best peer, target, higher is better) of one run."""
    p, peer_paths = results["paths"], _peer_paths(results)
    floor = p.get("floor", {})
    out = []
    for path in ("server/sse", "server/streamable"):
        ours = _get(p.get(path, {}), "latency", "p50_ms")
        peer = _best([_get(pp.get(path, {}), "latency", "p50_ms") for pp in peer_paths], False)
        out.append(("echo latency p50 (ms)", path, ours, peer, "<= 0.30", False))
    for path, want in (("server/sse", 5000), ("server/streamable", 6000)):
        keys = ("throughput_20", "calls_per_s")
        ours = _get(p.get(path, {}), *keys)
        peer = _best([_get(pp.get(path, {}), *keys) for pp in peer_paths], True)
        out.append(("calls/s, 20 sessions, one process", path, ours, peer, f">= {want:,}", True))
    for kind in ("sse", "streamable"):
        remote = _get(p.get(f"server/{kind}", {}), "latency", "p50_ms")
        ours = _minus(_get(p.get(f"client/{kind}", {}), "latency", "p50_ms"), remote)
        peer = _best([_minus(_get(pp.get(f"client/{kind}", {}), "latency", "p50_ms"), remote)
                      for pp in peer_paths], False)
        out.append(("client adds over the remote, p50 (ms)", f"client/{kind}", ours, peer,
                    "<= 0.40", False))
    for path in ("server/sse", "server/streamable", "server/modern"):
        keys = ("round_trip", str(MiB), "median_ms")
        ours = _get(p.get(path, {}), *keys)
        peer = _best([_get(pp.get(path, {}), *keys) for pp in peer_paths], False)
        out.append(("1 MiB round trip (ms)", path, ours, peer, "<= 12", False))
    stdio = _get(floor, "round_trip", str(10 * MiB), "median_ms")
    for path in ("server/sse", "server/streamable", "server/modern"):
        keys = ("round_trip", str(10 * MiB), "median_ms")
        ours = _ratio(_get(p.get(path, {}), *keys), stdio)
        peer = _best([_ratio(_get(pp.get(path, {}), *keys), stdio) for pp in peer_paths], False)
        out.append(("10 MiB round trip ÷ stdio floor", path, ours, peer, "<= 1.10", False))
    for path in ("client/sse", "client/streamable"):
        keys = ("startup", "median_ms")
        ours = _get(p.get(path, {}), *keys)
        peer = _best([_get(pp.get(path, {}), *keys) for pp in peer_paths], False)
        out.append(("client start-up ÷ best peer", path, _ratio(ours, peer), None, "<= 0.40",
                    False))
    return out


def _passes(value, target: str) -> bool | None:
    if value is None:
        return None
    op, bound = target.split()
    bound = float(bound.replace(",", ""))
    return value >= bound if op == ">=" else value <= bound


def _digits(value) -> int:
    return 3 if value is None or value < 10 else 1 if value < 100 else 0


def target_lines(results: dict) -> list[str]:
    body = []
    for figure, path, ours, peer, target, _ in rows(results):
        verdict = _passes(ours, target)
        body.append([figure, path, fmt(ours, _digits(ours)), fmt(peer, _digits(peer)), target,
                     "—" if verdict is None else "PASS" if verdict else "FAIL"])
    return ["Issue 13 targets (best peer: only with --peers; start-up needs them)",
            markdown(["figure", "path", "ours", "best peer", "target", "result"], body,
                     {2, 3})]


def spread(runs: list[dict]) -> str:
    """Each target's range over ``runs``: ours, the best peer, and how many runs passed."""
    table = [rows(r) for r in runs]
    body = []
    for i, (figure, path, _, _, target, _) in enumerate(table[0]):
        ours = [t[i][2] for t in table if t[i][2] is not None]
        peer = [t[i][3] for t in table if t[i][3] is not None]
        passed = sum(1 for v in ours if _passes(v, target))

        def span(values: list) -> str:
            if not values:
                return "—"
            digits = _digits(max(values))
            lo, hi = fmt(min(values), digits), fmt(max(values), digits)
            return lo if lo == hi else f"{lo} – {hi}"
        body.append([figure, path, span(ours), span(peer), target,
                     f"{passed} of {len(ours)}" if ours else "—"])
    return markdown(["figure", "path", "ours (range)", "best peer (range)", "target",
                     "runs passed"], body, {2, 3})


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python bench/issue13.py RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    runs = [json.loads(Path(p).read_text()) for p in paths]
    print(f"{len(runs)} runs: " + ", ".join(f"{r.get('date', '?')} {r.get('revision', '?')}"
                                           for r in runs))
    print(spread(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
