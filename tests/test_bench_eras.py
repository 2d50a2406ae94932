"""bench/eras.py (issue 25): each era bridge's pair of sessions measured through the real CLI
(server mode over raw_server of each era, client mode in front of it), a short run; what the
bench reports, and a bad command line refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ERAS = ROOT / "bench" / "eras.py"


def run_eras(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ERAS), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_a_short_run_measures_every_bridge_against_one_era():
    done = run_eras("--calls", "40", "--rounds", "2", "--warmup", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    figures = json.loads(text[:text.index("\n}\n") + 2])
    assert figures["proxy_exit_code"] == 0
    for pair in ("server-a", "server-b", "client"):
        result = figures[pair]
        for side in ("bridged", "same_era"):
            assert result[side]["calls"] == 40 and 0 < result[side]["p50_ms"] < 1000
            assert result[side]["calls_per_s"] > 0
        assert result["extra_p50_ms"] == pytest.approx(
            result["bridged"]["p50_ms"] - result["same_era"]["p50_ms"])
        assert result["passed"] is (result["extra_p50_ms"] <= 0.1)
    assert figures["client"]["modern_relayed"]["calls"] == 40
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # the head, three pairs and the client's bridge alone
    assert all(line.rstrip(" |").endswith(("PASS", "FAIL: over the bound"))
               for line in table[1:])


@pytest.mark.parametrize("args", [("--calls", "1", "--rounds", "2"), ("--rounds", "0"),
                                  ("--warmup", "-1"), ("--only", "server-c"),
                                  ("--calls", "many")])
def test_a_bad_command_line_is_refused_in_one_line(args):
    done = run_eras(*args, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    said = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and said[-1].startswith("eras.py: error: ")
