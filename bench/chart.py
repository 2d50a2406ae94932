"""bench/run.py's table as a picture: echo latency (p50, p99) and calls/s with 20 sessions,
ours beside the peers (a run with --peers) and the stdio floor.

It reads the figures a run wrote (--json), so a run is redrawn without running it again:

    python bench/chart.py bench/results.json             # writes bench/chart.png
    python bench/chart.py results.json --out /tmp/c.png

``make bench`` runs it after bench/run.py. It needs matplotlib (bench/requirements.txt,
which ``make bench`` installs; it is no dependency of mcp-proxy nor of its tests). Reading
the figures needs nothing but the standard library: a file that is missing, is not JSON or
holds no figures is refused in one line, before matplotlib is imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from peers import PEERS
from peertable import dig
from report import CLIENT_PATHS, SERVER_PATHS

BENCH = Path(__file__).parent
OURS = "mcp-proxy (this one)"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")  # ours, then the peers in order
FLOOR_COLOR = "#555555"


class ChartError(Exception):
    """Why there is nothing to draw, in one line."""


def load(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except OSError as exc:
        raise ChartError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChartError(f"{path} is not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(results, dict) or not isinstance(results.get("paths"), dict):
        raise ChartError(f"{path} holds no figures of bench/run.py (no \"paths\" object)")
    return results


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(figs, keys: tuple[str, ...]) -> float | None:
    """The figure at ``keys``, or None where it was not measured, failed or is no number."""
    value, _ = dig(_dict(figs), keys)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def bridges(results: dict) -> dict[str, dict]:
    """Each bridge measured (ours, then every peer of a --peers run) -> its paths' figures."""
    found = {OURS: _dict(results.get("paths"))}
    peers = _dict(results.get("peers"))
    for peer in PEERS:
        if isinstance(peers.get(peer), dict):
            version = peers[peer].get("version")
            label = peer if not isinstance(version, str) else \
                f"{peer.split(' ')[0]} {version.split(' ')[0]}"
            found[label] = _dict(peers[peer].get("paths"))
    return found


def latencies(results: dict) -> tuple[list[str], dict[str, list], tuple | None]:
    """(paths, bridge -> [(p50, p99) or None per path], the floor's (p50, p99) or None)."""
    paths = [*SERVER_PATHS, *CLIENT_PATHS]
    series = {}
    for label, figs in bridges(results).items():
        row = []
        for path in paths:
            p50 = _number(_dict(figs).get(path), ("latency", "p50_ms"))
            p99 = _number(_dict(figs).get(path), ("latency", "p99_ms"))
            row.append((p50, max(p99, p50)) if p50 is not None and p99 is not None else None)
        series[label] = row
    floor = _dict(_dict(results.get("paths")).get("floor"))
    p50, p99 = _number(floor, ("latency", "p50_ms")), _number(floor, ("latency", "p99_ms"))
    return paths, series, (p50, p99) if p50 is not None and p99 is not None else None


def throughputs(results: dict) -> tuple[list[str], dict[str, list], float | None]:
    """(server paths, bridge -> [calls/s with 20 sessions or None], the floor's or None)."""
    paths = list(SERVER_PATHS)
    series = {label: [_number(_dict(figs).get(path), ("throughput_20", "calls_per_s"))
                      for path in paths]
              for label, figs in bridges(results).items()}
    floor = _number(_dict(results.get("paths")).get("floor"), ("throughput_20", "calls_per_s"))
    return paths, series, floor


def title(results: dict) -> str:
    machine = _dict(results.get("machine"))
    parts = ["mcp-proxy bench"]
    for key, fmt in (("revision", "revision {}"), ("date", "{}")):
        if isinstance(results.get(key), str):
            parts.append(fmt.format(results[key][:40]))
    if isinstance(machine.get("cores"), int):
        parts.append(f"{machine['cores']} cores")
    if results.get("quick") is True:
        parts.append("--quick run")
    return ", ".join(parts)


def draw(results: dict, out: Path) -> None:
    paths, lat, lat_floor = latencies(results)
    tp_paths, tp, tp_floor = throughputs(results)
    if not any(v for row in lat.values() for v in row) \
            and not any(v for row in tp.values() for v in row):
        raise ChartError("no latency and no calls/s figures to draw (a partial run?)")
    try:
        import matplotlib
    except ImportError:
        raise ChartError("matplotlib is not installed: pip install -r bench/requirements.txt "
                         "(make bench does)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FuncFormatter

    figure, (left, right) = pyplot.subplots(
        1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [5, 3]}, layout="constrained")
    figure.suptitle(title(results), fontsize=11)
    _latency(left, paths, lat, lat_floor)
    _calls(right, tp_paths, tp, tp_floor)
    for axes in (left, right):  # a log scale: the peers and the floor are 10-100x apart
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1
                                                     else f"{v:g}"))
        axes.grid(axis="y", which="major", alpha=0.3)
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3,
                    frameon=False)  # under the paths: the bars' labels keep the top
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    pyplot.close(figure)


def _bars(axes, paths: list[str], series: dict) -> list[tuple[float, str, object]]:
    """(x, color, figure) of every bar slot, the paths' names under their groups, and one
    legend entry per bridge; a slot without a figure says n/a."""
    width = 0.8 / len(series)
    slots = [(i - 0.4 + width * (n + 0.5), COLORS[n % len(COLORS)], row[i])
             for n, row in enumerate(series.values()) for i in range(len(paths))]
    for n, label in enumerate(series):
        axes.bar(0, 0, 0, color=COLORS[n % len(COLORS)], label=label)
    for x, _, value in slots:
        if not value:
            axes.text(x, 0.01, "n/a" if value is None else "0", ha="center", va="bottom",
                      fontsize=7, color="#888888", transform=axes.get_xaxis_transform())
    axes.set_xticks(range(len(paths)), paths)
    axes.set_xlim(-0.5, len(paths) - 0.5)
    axes.tick_params(axis="x", labelsize=9)
    axes.set_yscale("log")
    return [slot for slot in slots if slot[2]]


def _span(values: list[float]) -> tuple[float, float]:
    """Log-scale limits around ``values``: room under the smallest and, for the labels,
    above the largest."""
    values = [v for v in values if v > 0] or [1.0]
    return min(values) / 2, max(values) * 3


def _latency(axes, paths: list[str], series: dict, floor: tuple | None) -> None:
    width = 0.8 / len(series)
    for x, color, (p50, p99) in _bars(axes, paths, series):
        axes.bar(x, p50, width * 0.9, color=color)
        axes.vlines(x, p50, p99, color="black", linewidth=1)
        axes.plot([x], [p99], marker="_", color="black", markersize=8)
        axes.text(x, p99 * 1.08, f"{p50:.2f}\n{p99:.2f}", ha="center", va="bottom",
                  fontsize=6.5)
    if floor:
        axes.axhline(floor[0], color=FLOOR_COLOR, linestyle="--", linewidth=1,
                     label=f"stdio floor p50 ({floor[0]:.3f} ms)")
        axes.axhline(floor[1], color=FLOOR_COLOR, linestyle=":", linewidth=1,
                     label=f"stdio floor p99 ({floor[1]:.3f} ms)")
    axes.set_ylim(*_span([v for row in series.values() for pair in row if pair for v in pair]
                         + list(floor or ())))
    axes.set_ylabel("ms per tools/call, log scale (bar: p50, line up to p99)")
    axes.set_title("echo latency, one session, sequential calls (labels: p50, p99)",
                   fontsize=10)


def _calls(axes, paths: list[str], series: dict, floor: float | None) -> None:
    width = 0.8 / len(series)
    for x, color, value in _bars(axes, paths, series):
        axes.bar(x, value, width * 0.9, color=color)
        axes.text(x, value * 1.08, f"{value:,.0f}", ha="center", va="bottom", fontsize=7)
    if floor:
        axes.axhline(floor, color=FLOOR_COLOR, linestyle="--", linewidth=1,
                     label=f"stdio floor ({floor:,.0f}/s)")
    axes.set_ylim(*_span([v for row in series.values() for v in row if v]
                         + ([floor] if floor else [])))
    axes.set_ylabel("calls/s, log scale")
    axes.set_title("calls/s, 20 sessions calling at once", fontsize=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw bench/run.py's figures (--json) as a "
                                                 "chart of latency and calls/s.")
    parser.add_argument("results", type=Path, help="the JSON a run wrote (bench/results.json)")
    parser.add_argument("--out", type=Path, default=BENCH / "chart.png",
                        help="the PNG to write (default bench/chart.png)")
    opts = parser.parse_args(argv)
    try:
        draw(load(opts.results), opts.out)
    except ChartError as exc:
        print(f"chart: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chart: cannot write {opts.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"chart written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
