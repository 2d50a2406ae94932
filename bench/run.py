#!/usr/bin/env python3
"""Benchmark mcp-proxy against "the floor" (the same stdio server spoken to with no proxy).

    python bench/run.py [--quick] [--only scaleout|client|oauth|eras] [--json bench/results.json]
                        [--pin]
                        [--profile DIR] [--peers]

Paths measured (all traffic on 127.0.0.1):

  server/sse         HTTP+SSE client -> mcp-proxy (server mode) -> raw_server (stdio)
  server/streamable  Streamable HTTP client -> mcp-proxy (server mode) -> raw_server
  server/modern      2026-07-28 requests on /mcp -> mcp-proxy (the modern lane) -> raw_server
  client/sse         stdio -> mcp-proxy URL/sse (client mode) -> mcp-proxy (server) -> raw_server
  client/streamable  stdio -> mcp-proxy --transport streamablehttp URL/mcp -> ... -> raw_server
  floor              stdio -> raw_server directly
  era bridges        a call bridged between protocol eras (server mode both ways, client
                     mode) vs the same call where both ends speak one era (eras.py)
  scale-out          sessions across processes through a Redis of the bench's own (issue 11):
                     a call forwarded from one proxy to another, gunicorn -w 1 and -w 2
  peers (--peers)    mcp-proxy 0.13 and supergateway 4 in the same server and client roles

This file holds the command line, the sequence of the run (``run``) and ``main``, which
writes the JSON and prints the table. The rest lives beside it, imported as sibling
modules (this script's directory is on sys.path): procs.py (processes, /proc readings,
profiling), wire.py (the HTTP/1.1 and SSE client), clients.py (the MCP sessions and the
proxy under test), measure.py (the measurements), report.py (the tables), and the phases
of their own: shared.py, slow.py, combined.py, oauth.py, eras.py, scaleout.py (with
farm.py: redis-server, gunicorn), peers.py (with peertable.py). The
load client is raw sockets with a hand-rolled HTTP/1.1 keep-alive client (Content-Length and chunked
bodies, SSE events), one blocking thread per session. No MCP SDK, no requests. Every
process started here is stopped here (SIGTERM, bounded wait, SIGKILL), also on errors and
on Ctrl-C. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import KEEPALIVE, ModernSession, Proxy, SseSession, StdioSession, StreamableSession
from combined import combined_latency
from eras import era_bridges
from issue13 import target_lines
from measure import (
    latency,
    latency_samples,
    remote_initialize,
    round_trips,
    startup,
    summary,
    throughput,
)
from oauth import oauth_latency
from peers import run_peers
from peertable import peer_lines
from procs import (
    CLK_TCK,
    PY,
    RAW_SERVER,
    ROOT,
    BenchError,
    MiB,
    Processes,
    log,
    proc_stat,
    profiled,
    raise_nofile,
)
from report import CLIENT_PATHS, SERVER_PATHS, build_rows, report
from scaleout import run_scaleout
from shared import connected_memory, idle_sse_memory, shared_throughput
from slow import disconnect_to_stop, slow_reader_memory


def client_argv(path: str, proxy: Proxy) -> list[str]:
    if path == "client/sse":
        return [PY, "-m", "mcp_proxy", "--transport", "sse", f"{proxy.url}/sse"]
    return [PY, "-m", "mcp_proxy", "--transport", "streamablehttp", f"{proxy.url}/mcp"]


# --------------------------------------------------------------------------- the run

def configure(quick: bool) -> dict:
    if quick:
        return {"calls": 200, "warmup": 20, "duration": 1.0, "warm": 0.3, "concurrency": [20, 100],
                "rt_runs": 2, "idle_sessions": 1000, "startup_runs": 3}
    return {"calls": 1000, "warmup": 100, "duration": 5.0, "warm": 0.5, "concurrency": [20, 100],
            "rt_runs": 5, "idle_sessions": 1000, "startup_runs": 7}


def run(opts, procs: Processes, results: dict) -> None:
    if opts.only == "client":
        run_client_only(opts, procs, results)
        return
    if opts.only == "eras":
        results["eras"] = era_bridges(procs, 2 * results["config"]["calls"], 10,
                                      results["config"]["warmup"])
        return
    if opts.only == "oauth" or opts.only is None:
        results["oauth"] = oauth_latency(procs, results["config"]["calls"],
                                         results["config"]["warmup"])
        if opts.only == "oauth":
            return
    if opts.only != "scaleout":
        run_paths(opts, procs, results)
        if opts.peers:
            log("peers: mcp-proxy 0.13 and supergateway 4 (installed into .cache/bench-peers/)")
            results["peers"] = run_peers(procs, results["config"])
    log("scale-out: a redis-server of the bench's own; forwarded calls, gunicorn -w 1 and -w 2")
    results["scaleout"] = run_scaleout(opts, procs, results["config"])


def run_paths(opts, procs: Processes, results: dict) -> None:
    cfg = results["config"]
    floor_argv = [PY, str(RAW_SERVER)]
    paths = results["paths"]
    for path in ("floor", *SERVER_PATHS, *CLIENT_PATHS):
        paths[path] = {}
    sizes = (1 * MiB, 10 * MiB)

    # ---------------------------------------------------------------- the floor
    log("floor: latency and round trips (raw_server over stdio, no proxy)")
    floor = StdioSession(procs, floor_argv, "floor")
    try:
        floor.initialize()
        paths["floor"]["latency"] = latency(floor, cfg["calls"], cfg["warmup"])
        paths["floor"]["round_trip"] = round_trips(floor, sizes, cfg["rt_runs"])
    finally:
        floor.close()
    for n in cfg["concurrency"]:
        log(f"floor: throughput, {n} raw_server processes")
        paths["floor"][f"throughput_{n}"] = throughput(
            lambda: StdioSession(procs, floor_argv, "floor-tp"), n, cfg["duration"], cfg["warm"],
            None, os.getpid())
    log("floor: start-up")
    paths["floor"]["startup"] = startup(procs, floor_argv, cfg["startup_runs"], "floor-start")

    # ---------------------------------------------------------------- server mode
    # a closed SSE stream is only noticed when the proxy next writes to it (a ping), so a
    # short keepalive lets each phase start without the last phase's sessions and children
    proxy = Proxy(procs, "proxy", ("--keepalive", str(KEEPALIVE)))
    results["proxy_pid"] = proxy.pid
    try:
        factories = {"server/sse": lambda: SseSession(proxy.port),
                     "server/streamable": lambda: StreamableSession(proxy.port),
                     "server/modern": lambda: ModernSession(proxy.port)}
        for path, make in factories.items():
            log(f"{path}: latency and round trips")
            paths[path].update(http_latency(opts, make(), path, proxy.pid, cfg, sizes))
            proxy.wait_sessions(0)
        for path, make in factories.items():
            for n in cfg["concurrency"]:
                log(f"{path}: throughput, {n} sessions")
                paths[path][f"throughput_{n}"] = throughput(
                    make, n, cfg["duration"], cfg["warm"], proxy.pid, proxy.pid,
                    profiled(opts, f"{path}-throughput-{n}", proxy.pid) if opts.profile else None)
                proxy.wait_sessions(0)

        # ------------------------------------------------------------ client mode
        for path in CLIENT_PATHS:
            log(f"{path}: latency and round trips (remote: the server-mode proxy)")
            session = StdioSession(procs, client_argv(path, proxy), path.replace("/", "-"))
            try:
                session.initialize()
                paths[path]["latency"] = client_latency(opts, session, path, cfg)
                paths[path]["round_trip"] = round_trips(session, sizes, cfg["rt_runs"])
            finally:
                code = session.close()
                if code not in (0, -signal.SIGTERM):
                    log(f"{path}: client exited with {code}")
            paths[path]["throughput_note"] = ("skipped: client mode serves one stdio session "
                                              "per process by design")
            log(f"{path}: start-up")
            paths[path]["startup"] = startup(procs, client_argv(path, proxy),
                                             cfg["startup_runs"], path.replace("/", "-"))
            proxy.wait_sessions(0)
            remote = factories[path.replace("client/", "server/")]
            paths[path]["remote_initialize"] = remote_initialize(remote, cfg["startup_runs"])
            proxy.wait_sessions(0)
    finally:
        code = proxy.stop()
        results["proxy_exit_code"] = code

    # ---------------------------------------------------------------- memory
    log(f"server/sse: {cfg['idle_sessions']} idle SSE sessions on a fresh proxy")
    paths["server/sse"]["idle_sessions"] = idle_sse_memory(procs, cfg["idle_sessions"])
    log("server/sse: a client that reads none of 100 MiB it asked for, on a fresh proxy")
    paths["server/sse"]["slow_reader"] = slow_reader_memory(procs)

    # ---------------------------------------------------------------- shared child
    log("server/sse: 100 connected SSE clients, a process each and one shared process")
    paths["server/sse"]["connected"] = connected_memory(procs, 100, ())
    paths["server/sse"]["connected_shared"] = connected_memory(procs, 100, ("--shared-child",))
    log("server mode: throughput, 20 sessions on one shared process")
    for path, figures in shared_throughput(procs, 20, cfg["duration"], cfg["warm"]).items():
        paths[path]["throughput_20_shared"] = figures

    # ---------------------------------------------------------------- combined server
    log("server/streamable: a call through a combined server vs the member's own path")
    paths["server/streamable"]["combined"] = combined_latency(procs, cfg["calls"], 5,
                                                              cfg["warmup"])

    # ---------------------------------------------------------------- era bridges
    results["eras"] = era_bridges(procs, 2 * cfg["calls"], 10, cfg["warmup"])

    # ---------------------------------------------------------------- disconnects
    log("server mode: a client closes its stream -> its server is gone")
    gone = disconnect_to_stop(procs, cfg["startup_runs"])
    paths["server/sse"]["disconnect"] = {"sse": gone["sse"]}
    paths["server/streamable"]["disconnect"] = {"streamable_get": gone["streamable_get"]}


def http_latency(opts, session, path: str, pid: int, cfg: dict, sizes: tuple = ()) -> dict:
    """Initialize an HTTP session with the proxy ``pid``, then its latency loop (profiled
    with --profile) and round trips of ``sizes``; the session is closed at the end."""
    figures = {}
    try:
        session.initialize()
        with profiled(opts, f"{path}-latency", pid):
            figures["latency"] = latency(session, cfg["calls"], cfg["warmup"])
        if sizes:
            figures["round_trip"] = round_trips(session, sizes, cfg["rt_runs"])
    finally:
        session.close()
    return figures


def client_latency(opts, session: StdioSession, path: str, cfg: dict) -> dict:
    """The latency loop through a client-mode process, with its CPU per call (and its
    profile with --profile)."""
    pid = session.proc.pid
    latency_samples(session, cfg["warmup"])
    before = proc_stat(pid)
    with profiled(opts, f"{path}-latency", pid):
        figures = summary(latency_samples(session, cfg["calls"], 1000 + cfg["warmup"]))
    after = proc_stat(pid)
    if before and after:
        figures["cpu_ms_per_call"] = (after[1] - before[1]) / CLK_TCK * 1000 / cfg["calls"]
    return figures


def run_client_only(opts, procs: Processes, results: dict) -> None:
    """--only client: the echo latency of the floor, then per transport of server mode and of
    client mode in front of it (the remote), one right after the other."""
    cfg, paths = results["config"], results["paths"]
    for path in ("floor", *SERVER_PATHS, *CLIENT_PATHS):
        paths[path] = {}
    floor = StdioSession(procs, [PY, str(RAW_SERVER)], "floor")
    try:
        floor.initialize()
        paths["floor"]["latency"] = latency(floor, cfg["calls"], cfg["warmup"])
    finally:
        floor.close()
    proxy = Proxy(procs, "proxy", ("--keepalive", str(KEEPALIVE)))
    results["proxy_pid"] = proxy.pid
    try:
        for path, make in (("client/sse", lambda: SseSession(proxy.port)),
                           ("client/streamable", lambda: StreamableSession(proxy.port))):
            remote = path.replace("client/", "server/")
            log(f"{remote}, then {path}: latency")
            paths[remote].update(http_latency(opts, make(), remote, proxy.pid, cfg))
            session = StdioSession(procs, client_argv(path, proxy), path.replace("/", "-"))
            try:
                session.initialize()
                paths[path]["latency"] = client_latency(opts, session, path, cfg)
            finally:
                session.close()
            proxy.wait_sessions(0)
    finally:
        results["proxy_exit_code"] = proxy.stop()


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=10,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mcp_proxy"], cwd=ROOT,
                               timeout=10, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head}{' + uncommitted changes in mcp_proxy/' if dirty else ''}" or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark mcp-proxy against the floor.")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 1 min)")
    parser.add_argument("--only", choices=["scaleout", "client", "oauth", "eras"],
                        help="run only these phases (scaleout: issue 11, through Redis; "
                             "client: the echo latency of client mode and of its remote; "
                             "oauth: a call with a validated JWT against no auth; eras: a "
                             "call bridged between protocol eras against one era)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"),
                        help="where to write the figures (default bench/results.json)")
    parser.add_argument("--pin", action="store_true",
                        help="pin proxy and stdio servers to core 0, the load client to core 1")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy record the proxy (server and client mode) during the "
                             "latency loops")
    parser.add_argument("--peers", action="store_true",
                        help="also measure mcp-proxy 0.13 and supergateway 4 (installed into "
                             ".cache/bench-peers/ on first use)")
    opts = parser.parse_args()

    try:
        import mcp_proxy  # noqa: F401
    except ImportError:
        print(f"mcp_proxy is not importable by {PY}; run `make install` first", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    pinned = bool(opts.pin and cores >= 2)
    if pinned:
        os.sched_setaffinity(0, {1})  # this thread; the worker threads inherit it
    cfg = configure(opts.quick)
    # an installed package carries its byte code; without it (PYTHONDONTWRITEBYTECODE, a fresh
    # checkout) every client start-up below would include compiling mcp_proxy
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "mcp_proxy")], check=False,
                   timeout=120, stdout=subprocess.DEVNULL)
    nofile = raise_nofile(2 * cfg["idle_sessions"] + 2 * 2 * max(cfg["concurrency"]) + 512)

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), "?")
    except OSError:
        pass
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": opts.quick,
        "revision": git_revision(),
        "machine": {"cores": cores, "cpu": cpu, "kernel": platform.release(),
                    "python": platform.python_version(), "pinned": pinned,
                    "rlimit_nofile": list(nofile)},
        "config": cfg, "paths": {},
    }
    logdir = Path(tempfile.mkdtemp(prefix="mcp-proxy-bench-"))
    procs = Processes(logdir, pinned)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.perf_counter()
    failed = False
    try:
        run(opts, procs, results)
    except (BenchError, OSError, KeyboardInterrupt) as exc:
        failed = True
        log(f"benchmark aborted: {exc!r}; process logs in {logdir}")
    finally:
        procs.stop_all()
    results["elapsed_s"] = time.perf_counter() - started
    if not failed:
        shutil.rmtree(logdir, ignore_errors=True)

    try:
        text = report(results)
    except (KeyError, TypeError) as exc:  # a partial run: still write what we have
        text = f"(partial results, no table: {exc!r})"
    if results.get("peers"):
        try:
            text += "\n\n" + "\n".join(peer_lines(results))
        except (KeyError, TypeError) as exc:
            text += f"\n\n(partial peer results, no table: {exc!r})"
    if results.get("paths"):
        text += "\n\n" + "\n".join(target_lines(results))
    rows = []
    try:
        rows = [{k: v for k, v in r.items() if k != "digits"} for r in build_rows(results)]
    except (KeyError, TypeError):
        pass
    results["table"] = rows
    results["table_text"] = text
    out = Path(opts.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"\nfigures written to {out} ({results['elapsed_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
