"""Processes of the benchmark and what /proc says about them.

This module is the base the other bench modules build on: where things are (``ROOT``,
``RAW_SERVER``, the interpreter ``PY``), the ``BenchError`` every failure is raised as and
the ``log`` every progress line goes through; ``Processes``, which starts every process of
the bench and stops them all again (SIGTERM, bounded wait, SIGKILL), also on errors and on
Ctrl-C; the /proc and rusage readings (process tree, RSS, CPU seconds of processes, of the
bench and of the whole machine); the file-descriptor limit; and the optional py-spy
profiler of the proxy (``--profile``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW_SERVER = ROOT / "tests" / "servers" / "raw_server.py"
PY = sys.executable
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Processes:
    """Every process the bench starts; ``stop_all`` ends them (TERM, bounded wait, KILL)."""

    def __init__(self, logdir: Path, pin: bool) -> None:
        self.logdir = logdir
        self.pin = pin
        self.procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._n = 0

    def start(self, argv: list[str], *, stdin=None, stdout=None, name: str = "proc",
              bufsize: int = -1, core: int | None = None, env: dict | None = None
              ) -> subprocess.Popen:
        with self._lock:
            self._n += 1
            logpath = self.logdir / f"{self._n:04d}-{name}.log"
        errfile = open(logpath, "wb")  # noqa: SIM115 - closed when the process is stopped
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=errfile,
                                    bufsize=bufsize, cwd=ROOT, close_fds=True,
                                    env=None if env is None else {**os.environ, **env})
        finally:
            errfile.close()
        proc.logpath = logpath  # type: ignore[attr-defined]
        if self.pin and core is not None:
            try:
                os.sched_setaffinity(proc.pid, {core})
            except OSError:
                pass
        with self._lock:
            self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
        if proc.stdin:  # a stdio server or client-mode proxy ends on EOF: give it a moment
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(min(2.0, timeout))
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {timeout:g} s; SIGKILL")
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if proc.stdout:
            try:
                proc.stdout.close()
            except OSError:
                pass
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        with self._lock:
            procs = list(self.procs)
        # SIGTERM everyone first, then wait: bounded overall
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.stdin and proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    log(f"pid {proc.pid} would not die")
        with self._lock:
            self.procs.clear()


# --------------------------------------------------------------------------- /proc readings

def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) from /proc/PID/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            total += st[1]
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_nofile(need: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- profiling

def profiled(opts, name: str, pid: int):
    if not opts.profile:
        return contextlib.nullcontext()
    return PySpy(opts.profile, name.replace("/", "-"), pid)


class PySpy:
    """``py-spy record`` of the proxy for the duration of a ``with`` block (if installed).

    Writes collapsed stacks (``DIR/NAME.txt``, one ``frame;frame;... count`` per line, for
    flamegraph.pl or speedscope). Sampling costs CPU: figures of a profiled run are not
    comparable with an unprofiled one.
    """

    def __init__(self, outdir: str, name: str, pid: int) -> None:
        self.exe = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
        self.out = Path(outdir) / f"{name}.txt"
        self.pid = pid
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        if not os.path.exists(self.exe):
            log("py-spy not found; no profile")
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, "record", "-p", str(self.pid), "-r", "200", "--nonblocking",
             "-f", "raw", "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        log(f"profile written to {self.out} (collapsed stacks)")
