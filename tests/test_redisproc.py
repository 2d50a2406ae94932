"""The redis-server the scaling tests run against: it starts, serves, stops and restarts on
the same port (tests/redisproc.py)."""

from __future__ import annotations

import pytest
import redis
from redisproc import RedisServer


def test_redis_server_stops_and_starts_again_on_its_port(redis_server):
    client = redis_server.client()
    assert client.set("mcpp:test", "one") and client.get("mcpp:test") == b"one"
    url = redis_server.url
    assert url == f"redis://127.0.0.1:{redis_server.port}/0"

    redis_server.stop()
    assert redis_server.proc.returncode is not None
    with pytest.raises(redis.ConnectionError):
        redis_server.client().ping()

    redis_server.start()
    assert redis_server.url == url
    fresh = redis.Redis.from_url(url, socket_timeout=5)
    assert fresh.get("mcpp:test") is None  # persistence is off: a restart starts empty
    assert fresh.set("mcpp:test", "two") and fresh.get("mcpp:test") == b"two"


def test_redis_server_with_a_password(tmp_path):
    server = RedisServer(tmp_path, password="s3cret").start()
    try:
        assert server.url.startswith("redis://:s3cret@127.0.0.1:")
        assert redis.Redis.from_url(server.url, socket_timeout=5).ping()
        with pytest.raises(redis.AuthenticationError):
            server.client(password=None).ping()
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_a_missing_redis_server_fails_the_test_with_what_to_install(monkeypatch, tmp_path):
    import redisproc

    monkeypatch.setattr(redisproc.shutil, "which", lambda name: None)
    monkeypatch.setattr(redisproc.os, "access", lambda path, mode: False)
    with pytest.raises(AssertionError, match=r"redis-server not found: install Debian's "
                                             r"redis-server \(make test does: \.ci/deps\)"):
        RedisServer(tmp_path)
