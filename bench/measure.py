"""What the bench measures, over any session with ``call`` (see clients.py).

``EchoCall`` builds the ``tools/call`` echo bodies of one payload size and checks the
answers. ``latency`` times sequential small calls on one session (``latency_samples``
the times themselves, ``summary`` their percentiles); ``round_trips`` times big (1 and 10
MiB) echoes; ``throughput`` runs many sessions on threads, counts the calls completed in a
fixed window and samples the CPU and RSS of the proxy, of its stdio servers, of any other
processes named and of the bench over that window; ``startup`` times a stdio process from
start to its initialize answer, and ``remote_initialize`` the remote's own part of that (a
new session over raw HTTP, so the server-mode proxy starting its raw_server is included).
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import threading
import time

from clients import StdioSession, initialize_body
from procs import (
    BenchError,
    Processes,
    cpu_seconds,
    descendants,
    log,
    machine_ticks,
    rss_kib,
    self_cpu,
)
from wire import IO_TIMEOUT


class EchoCall:
    """tools/call echo bodies for one payload; checks the answers."""

    def __init__(self, size: int) -> None:
        self.text = "x" * size if size > 64 else "hello bench"
        self.size = len(self.text)
        self._head = b'{"jsonrpc":"2.0","id":'
        self._tail = (b',"method":"tools/call","params":{"name":"echo","arguments":{"text":'
                      + json.dumps(self.text).encode() + b"}}}")

    def body(self, rid: int) -> bytes:
        return self._head + str(rid).encode() + self._tail

    def check(self, rid: int, answer: bytes) -> None:
        """Cheap for small answers (full parse); for big ones: id and size, parse once."""
        if self.size <= 4096:
            obj = json.loads(answer)
            if obj.get("id") != rid or obj["result"]["content"][0]["text"] != self.text:
                raise BenchError(f"bad answer to call {rid}: {answer[:200]!r}")
        elif len(answer) < self.size or \
                (f'"id":{rid}').encode() not in bytes(answer[:100]) + bytes(answer[-100:]):
            raise BenchError(f"bad {len(answer)}-byte answer to call {rid}: {answer[:200]!r}")

    def check_full(self, rid: int, answer: bytes) -> None:
        obj = json.loads(bytes(answer) if isinstance(answer, memoryview) else answer)
        if obj.get("id") != rid or obj["result"]["content"][0]["text"] != self.text:
            raise BenchError(f"bad answer to call {rid}: {answer[:200]!r}")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_samples(session, calls: int, rid: int = 1000) -> list[float]:
    """Milliseconds of ``calls`` sequential small echo calls, ids from ``rid + 1`` on."""
    echo = EchoCall(0)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        rid += 1
        body = echo.body(rid)
        t0 = clock()
        answer = session.call(body)
        samples.append((clock() - t0) / 1e6)
        echo.check(rid, answer)
    return samples


def summary(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {"calls": len(samples), "p50_ms": percentile(samples, 50),
            "p99_ms": percentile(samples, 99), "mean_ms": statistics.fmean(samples),
            "min_ms": samples[0], "max_ms": samples[-1]}


def latency(session, calls: int, warmup: int) -> dict:
    latency_samples(session, warmup)
    return summary(latency_samples(session, calls, 1000 + warmup))


def round_trips(session, sizes: list[int], runs: int) -> dict:
    out = {}
    rid = 5000
    for size in sizes:
        echo = EchoCall(size)
        times = []
        for run in range(runs + 1):  # the first run warms buffers and is not counted
            rid += 1
            body = echo.body(rid)
            t0 = time.perf_counter()
            answer = session.call(body)
            elapsed = (time.perf_counter() - t0) * 1000
            if run == 0:
                echo.check_full(rid, answer)
            else:
                echo.check(rid, answer)
                times.append(elapsed)
            del answer
        out[str(size)] = {"runs": runs, "median_ms": statistics.median(times),
                          "min_ms": min(times), "max_ms": max(times)}
    return out


def throughput(make_session, sessions: int, duration: float, warm: float,
               watch_pid: int | None, watch_children_of: int, around=None,
               groups=None) -> dict:
    """``sessions`` threads, each with its own session, calling back to back.

    Calls completed inside [start + warm, start + warm + duration] count. CPU use of the
    proxy (``watch_pid``), of the stdio servers (descendants of ``watch_children_of``) and
    of the bench itself is sampled over the same window. ``around`` (a context manager,
    e.g. a profiler) is entered once every session is ready and left after the window.
    ``groups`` (a callable, called as the window opens) names more processes whose CPU is
    sampled over the window: ``{name: [pid, ...]}`` gives ``cpu_groups_pct[name]``.
    """
    ready = threading.Barrier(sessions + 1, timeout=120)
    go = threading.Event()  # set once ``window`` is known
    window: list[float] = []
    counts = [0] * sessions
    lat: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[str] = []
    opened: list = [None] * sessions

    def worker(i: int) -> None:
        session = None
        try:
            session = make_session()
            opened[i] = session
            session.initialize()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"session {i} setup: {exc!r}")
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        if not go.wait(IO_TIMEOUT) or session is None or errors or not window:
            return
        echo = EchoCall(0)
        lo, hi = window
        rid, n, mine = 0, 0, lat[i]
        clock = time.perf_counter
        try:
            while True:
                rid += 1
                body = echo.body(rid)
                t0 = clock()
                if t0 >= hi:
                    break
                answer = session.call(body)
                t1 = clock()
                if rid % 64 == 1:
                    echo.check(rid, answer)
                if lo <= t1 <= hi:
                    n += 1
                    mine.append(t1 - t0)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"session {i}: {exc!r}")
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(sessions)]
    t_setup = time.perf_counter()
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        errors.append("sessions did not all start within 120 s")
    setup_s = time.perf_counter() - t_setup
    result: dict = {"sessions": sessions, "setup_s": setup_s}
    try:
        if errors:
            raise BenchError(f"{len(errors)} session errors, first: {errors[0]}")
        with contextlib.ExitStack() as stack:
            if around is not None:
                stack.enter_context(around)
            start = time.perf_counter()
            window.extend([start + warm, start + warm + duration])
            go.set()
            time.sleep(warm)
            watched = [watch_pid] if watch_pid else []
            kids = [k for k in descendants(watch_children_of) if k != watch_pid]
            c0 = (cpu_seconds(watched), cpu_seconds(kids), self_cpu(), time.perf_counter(),
                  machine_ticks())
            named = groups() if groups else {}
            g0 = {name: cpu_seconds(pids) for name, pids in named.items()}
            rss0 = (rss_kib(watch_pid) if watch_pid else 0, sum(rss_kib(k) for k in kids))
            time.sleep(duration)
            c1 = (cpu_seconds(watched), cpu_seconds(kids), self_cpu(), time.perf_counter(),
                  machine_ticks())
            g1 = {name: cpu_seconds(pids) for name, pids in named.items()}
        wall = c1[3] - c0[3]
        result.update({
            "cpu_proxy_pct": 100 * (c1[0] - c0[0]) / wall if watch_pid else None,
            "cpu_servers_pct": 100 * (c1[1] - c0[1]) / wall,
            "cpu_bench_pct": 100 * (c1[2] - c0[2]) / wall,
            "machine_busy_pct": 100 * (1 - (c1[4][1] - c0[4][1]) / max(1, c1[4][0] - c0[4][0])),
            "servers": len(kids),
            "proxy_rss_mib": rss0[0] / 1024 if watch_pid else None,
            "servers_rss_mib": rss0[1] / 1024,
            "cpu_groups_pct": {name: 100 * (g1[name] - g0[name]) / wall for name in named},
        })
    finally:
        go.set()  # workers never wait past an error here
        for t in threads:
            t.join(duration + warm + IO_TIMEOUT + 5)
        for session in opened:
            if session is not None:
                try:
                    session.close()
                except Exception:  # noqa: BLE001
                    pass
    if errors:
        raise BenchError(f"{len(errors)} session errors, first: {errors[0]}")
    samples = sorted(x * 1000 for per in lat for x in per)
    total = sum(counts)
    result.update({"calls": total, "duration_s": duration, "calls_per_s": total / duration,
                   "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)})
    return result


def startup(procs: Processes, argv: list[str], runs: int, name: str) -> dict:
    """Process start to the initialize answer on stdout (initialize written at once)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session = StdioSession(procs, argv, name)
        try:
            session.write(initialize_body() + b"\n")
            answer = session.readline()
            times.append((time.perf_counter() - t0) * 1000)
            if b'"result"' not in answer:
                raise BenchError(f"initialize failed: {answer[:200]!r}")
        finally:
            code = session.close()
        if code not in (0, -signal.SIGTERM, None):
            log(f"{name} exited with {code}")
    return {"runs": runs, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times)}


def remote_initialize(make_session, runs: int) -> dict:
    """A new session's initialize over raw HTTP: the remote's share of client start-up.

    Timed from opening the session (SSE: from ``GET /sse``) to the initialize answer; it
    includes the server-mode proxy starting a raw_server for the session.
    """
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session = make_session()
        try:
            session.initialize()
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            session.close()
    return {"runs": runs, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times)}
