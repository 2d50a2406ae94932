"""The era matrix's parts: its clients, its servers, its cells and how one cell runs.

A cell is a client of one era in front of a server of one era through one of the proxy's
paths. Its client is ``era_driver.py`` in a subprocess, under the official SDK of that era:
``mcp`` 1.x (the 2025 era; installed on first use into ``.venv-mcp1/``, git-ignored, under a
lock so that two xdist workers do not race) or the test venv's ``mcp`` 2.x in its ``legacy``,
``auto`` and ``2026-07-28`` modes. Its server is the SDK fixture server (``sdk_server.py``,
which speaks both eras on stdio) alone, behind ``legacy_only.py`` (2025 only) or behind
``modern_only.py`` (2026-07-28 only). The README's matrix and docs/eras.md repeat what
``EXPECTED`` and ``IMPOSSIBLE`` say here.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import OFFLINE, SDK_SERVER, SERVERS, TESTS, ProxyProcess

ROOT = TESTS.parent
MCP1 = ROOT / ".venv-mcp1"
MCP1_PIN = "mcp>=1.30,<2"  # the newest 1.x: the SDK most 2025-era clients run
LEGACY, MODERN = "2025-11-25", "2026-07-28"

CLIENTS = {"mcp1": None, "legacy": "legacy", "auto": "auto", "modern": MODERN}
SERVER_COMMANDS = {
    "2025": [sys.executable, str(SERVERS / "legacy_only.py"), *SDK_SERVER],
    "dual": SDK_SERVER,
    "2026": [sys.executable, str(SERVERS / "modern_only.py")],
}
DIRECT_ERA = {"2025": "legacy", "dual": "both", "2026": "modern"}  # sdk_server.py --era
STEPS = ("tools", "progress", "sample", "elicit", "subscribe", "cancel")

SSE_ONLY_2025 = ("impossible: a 2026-07-28 client speaks Streamable HTTP only, and HTTP+SSE "
                 "has no 2026-07-28 era")


def mcp1_python() -> str:
    """The Python of ``.venv-mcp1`` (SDK 1.x), made on first use; skipped when the package
    index cannot be reached."""
    python = MCP1 / "bin" / "python"
    MCP1.parent.joinpath(".cache").mkdir(exist_ok=True)
    with open(ROOT / ".cache" / "venv-mcp1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker builds it, the other waits
        if not (MCP1 / "ready").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(MCP1)], check=True,
                           capture_output=True, timeout=120)
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", MCP1_PIN],
                                  capture_output=True, text=True, timeout=400)
            if done.returncode != 0 and (OFFLINE.search(done.stderr)
                                         or "No matching distribution" in done.stderr):
                pytest.skip(f"the package index is unreachable: {done.stderr.strip()[-300:]}")
            assert done.returncode == 0, done.stderr[-3000:]
            (MCP1 / "ready").write_text(MCP1_PIN + "\n")
    return str(python)


def client_python(client: str) -> list[str]:
    python = mcp1_python() if client == "mcp1" else sys.executable
    mode = CLIENTS[client]
    return [python, str(TESTS / "era_driver.py"), *(["--mode", mode] if mode else [])]


def run_cells(client: str, cells: dict, folder: Path) -> dict:
    """Run cells of one client, ``{id: (transport, target)}``, in one driver process (an SDK
    import per cell is most of a cell's cost): ``{id: report}``, a report having one entry
    per step (and ``session``)."""
    listed = [{"cell": cell, "transport": transport, "target": target,
               "mark": str(folder / f"{cell}.cancelled")}
              for cell, (transport, target) in cells.items()]
    (folder / "cells.json").write_text(json.dumps(listed))
    done = subprocess.run([*client_python(client), "--cells", str(folder / "cells.json"),
                           "--timeout", "20"],
                          capture_output=True, text=True, timeout=90 + 60 * len(cells))
    reports: dict = {cell: {} for cell in cells}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        reports[entry.pop("cell")].setdefault(entry.pop("step"), entry)
    for report in reports.values():
        report["stderr"] = done.stderr[-3000:]
    return reports


def reports_by_client(cells: list, target, folders) -> Callable[..., dict]:
    """The report of a cell: a client's cells (of ``cells``) all run in one driver process,
    on the first use of any of them. ``target(cell)`` is what the cell's client reaches
    (transport, URL or command); ``folders`` is pytest's ``tmp_path_factory``."""
    done: dict = {}

    def report(*cell: str) -> dict:
        client = cell[0]
        if client not in done:
            done[client] = run_cells(client, {cell_id(*each): target(each)
                                              for each in cells if each[0] == client},
                                     folders.mktemp(client))
        return done[client][cell_id(*cell)]

    return report


def check_cell(report: dict, era: str) -> None:
    """Every step of a cell did what it must, and the client spoke ``era``."""
    session = report.get("session", {"error": "no session"})
    assert "error" not in session, (report, report["stderr"])
    failed = {step: report.get(step) for step in STEPS
              if step not in report or "error" in report[step]}
    assert not failed, (failed, report["stderr"])
    observed = {
        "era": report["session"]["protocolVersion"],
        "tools": {"progress", "sample", "elicit", "touch", "slow"} <= set(
            report["tools"]["tools"]),
        "progress": (report["progress"]["values"], report["progress"]["result"]),
        "sample": (report["sample"]["result"], report["sample"]["asked"]),
        "elicit": report["elicit"]["result"],
        "updated": report["subscribe"]["updated"],
        "cancel": (report["cancel"]["cancelled"], report["cancel"]["after"]),  # the handler's
    }
    assert observed == {
        "era": era, "tools": True, "progress": ([1, 2, 3], "done"),
        "sample": ("sampled:hi", ["sampling/createMessage"]), "elicit": "accept:octocat",
        "updated": ["memo://greeting"], "cancel": ("cancelled", "after"),
    }, {step: entry for step, entry in report.items() if step != "stderr"}


def client_era(client: str, modern_reachable: bool) -> str:
    """The era a client ends up speaking: ``auto`` takes 2026-07-28 where its path offers it."""
    if client == "modern" or (client == "auto" and modern_reachable):
        return MODERN
    return LEGACY


def start_proxy(*args: str) -> ProxyProcess:
    return ProxyProcess(*args).started()


def start_direct(server: str) -> ProxyProcess:
    """The fixture server itself over Streamable HTTP, narrowed to the server's era."""
    process = ProxyProcess("streamable-http", "--era", DIRECT_ERA[server],
                           command=tuple(SDK_SERVER))
    port = process.expect(r"LISTENING (\d+)", timeout=60).group(1)
    process.base = f"http://127.0.0.1:{port}"
    return process


def cell_id(*parts: str) -> str:
    return "-".join(re.sub(r"\W+", "", part) for part in parts)
