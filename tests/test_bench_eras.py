"""bench/eras.py (issue 25): each era bridge's pair of sessions measured through the real CLI
(server mode over raw_server of each era, client mode in front of it), a short run; what the
bench reports, and a bad command line refused in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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


def test_a_stopped_run_stops_what_it_started():
    sys.path.insert(0, str(ROOT / "bench"))
    from procs import descendants

    run = subprocess.Popen([sys.executable, str(ERAS), "--calls", "100000", "--only", "client"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        started: list[int] = []
        while len(started) < 4 and time.monotonic() < deadline:  # the proxy, its child, ...
            time.sleep(0.2)
            started = descendants(run.pid)
        assert len(started) >= 4, "the run did not start its processes within 60 s"
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 1
    assert "era bridges aborted: KeyboardInterrupt('signal 15')" in err
    assert "Traceback" not in err
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
