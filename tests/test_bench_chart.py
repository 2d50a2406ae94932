"""bench/chart.py: the bench's figures drawn from the JSON a run wrote, and every file that is
not such figures refused in one line. Drawing needs matplotlib, the bench's own dependency
(bench/requirements.txt): without it those tests skip; reading the figures needs nothing."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).parents[1]
CHART = ROOT / "bench" / "chart.py"

# the shape of bench/results.json, cut down: ours on every path, two peers on some (one with
# a figure it could not give, one that failed), the floor
FIXTURE = {
    "date": "2026-12-03 15:00:00 +0000", "quick": True, "revision": "abc1234",
    "machine": {"cores": 2},
    "paths": {
        "floor": {"latency": {"p50_ms": 0.04, "p99_ms": 0.06},
                  "throughput_20": {"calls_per_s": 28000.0}},
        "server/sse": {"latency": {"p50_ms": 0.27, "p99_ms": 1.36},
                       "throughput_20": {"calls_per_s": 2380.0}},
        "server/streamable": {"latency": {"p50_ms": 0.45, "p99_ms": 0.64},
                              "throughput_20": {"calls_per_s": 3198.0}},
        "server/modern": {"latency": {"p50_ms": 0.56, "p99_ms": 1.02},
                          "throughput_20": {"calls_per_s": 2622.0}},
        "client/sse": {"latency": {"p50_ms": 0.68, "p99_ms": 1.59},
                       "throughput_note": "skipped"},
        "client/streamable": {"latency": {"p50_ms": 1.01, "p99_ms": 1.56}},
    },
    "peers": {
        "mcp-proxy 0.13": {"version": "0.13.0", "paths": {
            "server/sse": {"latency": {"p50_ms": 0.9, "p99_ms": 2.0},
                           "throughput_20": {"calls_per_s": 700.0}},
            "server/streamable": {"latency": {"error": "no answer within 60 s"}}}},
        "supergateway": {"version": "4.0.1 (Node v20.1.0)", "paths": {
            "server/sse": {"latency": {"p50_ms": 1.2, "p99_ms": 3.1},
                           "throughput_20": {"na": "one child for all sessions"}}}},
    },
}


@functools.cache
def chart_module():
    """bench/chart.py imported as the bench runs it (bench/ first on the path)."""
    sys.path.insert(0, str(CHART.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_chart", CHART)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(CHART.parent))


def run_chart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHART), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_chart_is_drawn_from_a_results_file(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the bench's own dependency "
                                             "(bench/requirements.txt), not the tests'")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(FIXTURE))
    out = tmp_path / "charts" / "chart.png"
    done = run_chart(str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"chart written to {out}"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1300, 560)


def test_the_figures_it_draws_are_the_files(tmp_path):
    chart = chart_module()
    paths, latency, floor = chart.latencies(FIXTURE)
    assert paths == ["server/sse", "server/streamable", "server/modern", "client/sse",
                     "client/streamable"]
    assert list(latency) == [chart.OURS, "mcp-proxy 0.13.0", "supergateway 4.0.1"]
    assert latency[chart.OURS][0] == (0.27, 1.36) and floor == (0.04, 0.06)
    assert latency["mcp-proxy 0.13.0"][:3] == [(0.9, 2.0), None, None]  # failed, not measured
    paths, calls, floor = chart.throughputs(FIXTURE)
    assert paths == ["server/sse", "server/streamable", "server/modern"] and floor == 28000.0
    assert calls[chart.OURS] == [2380.0, 3198.0, 2622.0]
    assert calls["supergateway 4.0.1"] == [None, None, None]  # "na": a reason, no figure
    without_peers = {key: value for key, value in FIXTURE.items() if key != "peers"}
    assert list(chart.latencies(without_peers)[1]) == [chart.OURS]


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read"),
    (b"{not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b"[1, 2]", 'no "paths" object'),
    (b'{"paths": {}}', "no latency and no calls/s figures"),
    (b'{"paths": {"server/sse": {"latency": {"p50_ms": "fast", "p99_ms": NaN}}}}',
     "no latency and no calls/s figures"),
])
def test_a_file_without_figures_is_refused_in_one_line(tmp_path, content, says):
    results = tmp_path / "results.json"
    if content is not None:
        results.write_bytes(content)
    done = run_chart(str(results), "--out", str(tmp_path / "chart.png"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("chart: ") and says in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "chart.png").exists()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["paths", "peers", "floor", "server/sse", "latency",
                                       "p50_ms", "p99_ms", "throughput_20", "calls_per_s",
                                       "na", "error", "version", "mcp-proxy 0.13",
                                       "supergateway", "machine", "cores", "revision"]),
                      inner, max_size=5),
    max_leaves=30)


@settings(max_examples=200, deadline=None, database=None)
@given(JSON)
def test_any_json_gives_figures_or_a_reason_never_a_crash(value):
    chart = chart_module()
    results = {"paths": value} if not isinstance(value, dict) else value
    for figures in (chart.latencies(results), chart.throughputs(results)):
        for row in figures[1].values():
            for figure in row:
                for number in (figure if isinstance(figure, tuple) else (figure,)):
                    assert number is None or (math.isfinite(number) and number >= 0)
    assert isinstance(chart.title(results), str)
