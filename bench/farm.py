"""The processes of the scale-out phases: a redis-server of the bench's own, and gunicorn.

``RedisServer`` starts Debian's ``redis-server`` on a free loopback port with persistence off
(``--save "" --appendonly no``) and waits (bounded) for its PONG. ``Gunicorn`` runs
``mcp_proxy.wsgi:application`` under ``gunicorn -k gevent -w N -c
python:mcp_proxy.gunicorn_conf`` over raw_server, with or without ``MCP_PROXY_REDIS_URL``,
and knows its master, its workers, their stdio servers and each worker's /status. Both are
started and stopped through ``procs.Processes``, like every other process of the bench.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import time

from clients import KEEPALIVE, get_status
from procs import PY, RAW_SERVER, BenchError, Processes, descendants, log, proc_stat
from wire import HOST


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _pong(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


class RedisServer:
    """A ``redis-server`` on a free loopback port, no persistence; ``url`` to reach it."""

    def __init__(self, procs: Processes) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            raise BenchError("redis-server not found (Debian: apt-get install redis-server)")
        self.procs = procs
        for _ in range(3):  # a free port may be taken by someone else before redis binds it
            self.port = free_port()
            logfile = procs.logdir / f"redis-{self.port}.log"
            self.proc = procs.start([binary, "--bind", HOST, "--port", str(self.port),
                                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                                     "--dir", str(procs.logdir), "--logfile", str(logfile)],
                                    name="redis-server")
            if _pong(self.port, 10):
                self.pid = self.proc.pid
                return
            procs.stop(self.proc)
        raise BenchError(f"redis-server did not answer PING; see {procs.logdir}")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self.procs.stop(self.proc)


class Gunicorn:
    """``gunicorn -k gevent -w N`` serving mcp-proxy over raw_server on a random port."""

    def __init__(self, procs: Processes, workers: int, redis_url: str | None,
                 name: str = "gunicorn") -> None:
        self.procs = procs
        self.nworkers = workers
        args = ["--keepalive", str(KEEPALIVE), "--max-body-size", "32MiB", "--",
                PY, str(RAW_SERVER)]
        env = {"MCP_PROXY_ARGS": shlex.join(args), "MCP_PROXY_REDIS_URL": redis_url or ""}
        self.proc = procs.start([PY, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
                                 "-c", "python:mcp_proxy.gunicorn_conf", "-b", f"{HOST}:0",
                                 "mcp_proxy.wsgi:application"], name=name, env=env)
        self.pid = self.proc.pid
        self.port = self._listening()
        self.pids = self._wait_workers(redis_url is not None)

    def _listening(self) -> int:
        logpath = self.proc.logpath  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while True:
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                              logpath.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"gunicorn did not start; its log {logpath}:\n"
                                 + logpath.read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def workers(self) -> list[int]:
        return sorted(pid for pid in descendants(self.pid)
                      if (proc_stat(pid) or (0,))[0] == self.pid)

    def statuses(self, tries: int = 400) -> dict[int, dict]:
        """Every worker's /status (pid -> status), asking on fresh connections until each
        has answered once (the kernel hands each connection to one of them)."""
        seen: dict[int, dict] = {}
        for _ in range(tries):
            status = get_status(self.port)
            seen[status["worker"]["pid"]] = status
            if len(seen) >= self.nworkers:
                return seen
        raise BenchError(f"only workers {sorted(seen)} of {self.nworkers} answered /status")

    def _wait_workers(self, redis: bool) -> list[int]:
        deadline = time.monotonic() + 30
        while True:
            statuses = self.statuses()
            if all(s["worker"]["redis"] == "connected" or not redis for s in statuses.values()):
                return sorted(statuses)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"gunicorn's workers did not all connect to Redis: {statuses}")
            time.sleep(0.1)

    def routes(self) -> dict[str, int]:
        """local, forwarded and served requests summed over the workers (0s without Redis)."""
        total = {"local": 0, "forwarded": 0, "served": 0}
        for status in self.statuses().values():
            for key in total:
                total[key] += status["worker"].get(key, 0)
        return total

    def servers(self) -> dict[int, list[int]]:
        """The stdio servers (every descendant) of each worker."""
        return {worker: descendants(worker) for worker in self.pids}

    def groups(self, redis_pid: int | None) -> dict[str, list[int]]:
        """The processes whose CPU a throughput run reports, by name."""
        servers = self.servers()
        self.servers_per_worker = [len(kids) for kids in servers.values()]
        named = {"master": [self.pid]}
        for n, worker in enumerate(self.pids, 1):
            named[f"worker {n}"] = [worker]
        named["servers"] = [pid for kids in servers.values() for pid in kids]
        if redis_pid:
            named["redis"] = [redis_pid]
        return named

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Wait (bounded) until the last run's stdio servers are gone."""
        deadline = time.monotonic() + timeout
        while any(self.servers().values()):
            if time.monotonic() > deadline:
                log(f"gunicorn: stdio servers still running after {timeout:g} s")
                return
            time.sleep(0.1)

    def stop(self) -> int | None:
        return self.procs.stop(self.proc, timeout=20)
