"""A real ``redis-server`` for the tests: on a free loopback port, in a temporary directory,
persistence off, stoppable and restartable on the same port (the outage tests need that)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails (never skips) the test when it is not installed."""
    found = shutil.which("redis-server")
    for path in (found, "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if path and os.access(path, os.X_OK):
            return path
    raise AssertionError("redis-server not found: install Debian's redis-server "
                         "(make test does: .ci/deps)")


class RedisServer:
    """One ``redis-server`` process; ``url`` stays the same across ``stop()`` and ``start()``."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        """A client that fails at once when the server is down (redis-py retries by default)."""
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 5)
        kwargs.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> RedisServer:
        """Start it (again, on the same port once it has one); return when it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis-server is running"
        tries = 1 if self.port else 3  # a fresh free port may be taken by someone else first
        for attempt in range(tries):
            if tries > 1:
                self.port = free_port()
            self._spawn()
            if self._answers():
                return self
            self.stop()
            if attempt + 1 == tries:
                raise AssertionError(f"redis-server did not answer PING on port {self.port} "
                                     f"within {START_TIMEOUT:g} s:\n{self.log()}")
        return self

    def _spawn(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def _answers(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        with self.client(socket_timeout=1, socket_connect_timeout=1) as client:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    time.sleep(0.01)
                finally:
                    client.connection_pool.disconnect()
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""
