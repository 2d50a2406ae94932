"""The bus under faults: real ``gunicorn -k gevent -w 3`` workers, a real redis-server that is
killed, restarted and stalled, and real fixture servers that record what they were sent.

Each test injects one fault while clients keep working, then holds the proxy to the promises
it makes: a dead owner's sessions answer 404 within the bus grace, every time; a Redis blip
answers every request soon after Redis is back and never fails one whose message was
delivered; a worker that was stopped serves again as soon as it runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from test_scaleout_gunicorn import worker_status

from conftest import RAW_SERVER, STREAM_HEADERS, GunicornProcess, open_sse, rpc
from mcp_proxy.server.scaleout.bus import GRACE


def farm(redis_server, record: Path | None = None) -> GunicornProcess:
    args = " ".join(RAW_SERVER) + (f" --record {record}" if record else "")
    return GunicornProcess(f"--keepalive 0.25 -- {args}", workers=3, env={
        "MCP_PROXY_REDIS_URL": redis_server.url, "MCP_PROXY_ROUTE_HEADER": "1",
        "MCP_PROXY_BUS_PING": "0.3"})


def listening(base: str, count: int = 3, timeout: float = 20) -> dict[str, int]:
    """The tags and pids of ``count`` workers listening on Redis (each try a new connection)."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} listen on Redis"
        worker = worker_status(base)["worker"]
        seen[worker["id"]] = worker["pid"]
    return seen


def streamable_on(base: str, tag: str, tries: int = 60) -> dict:
    """The headers of a new Streamable HTTP session owned by the worker ``tag``."""
    for _ in range(tries):
        init = requests.post(base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                             json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        assert init.status_code == 200, init.text
        if init.headers["Mcp-Session-Id"].startswith(tag):
            return {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
        requests.delete(base + "/mcp", headers={"Mcp-Session-Id": init.headers[
            "Mcp-Session-Id"]}, timeout=10)
    raise AssertionError(f"no session landed on worker {tag} in {tries} tries")


def test_a_killed_owner_answers_404_within_the_grace_every_time(redis_server):
    """Three owners killed in turn: every POST to their sessions, wherever it lands, is a 404
    within the grace (plus a second), never a hang."""
    with farm(redis_server) as proxy:
        for _ in range(3):
            workers = listening(proxy.base)
            reader, endpoint = open_sse(proxy.base, timeout=10)
            tag = endpoint.rsplit("=", 1)[1][:8]
            headers = streamable_on(proxy.base, tag)
            os.kill(workers[tag], signal.SIGKILL)
            reader.close()
            posts = [(url, kwargs) for _ in range(4)  # fresh connections: every worker
                     for url, kwargs in ((endpoint, {}), (proxy.base + "/mcp",
                                                          {"headers": headers}))]
            with ThreadPoolExecutor(len(posts)) as pool:
                answers = list(pool.map(lambda post: timed_post(*post), posts))
            for status, took, text in answers:
                assert status == 404 and took < GRACE + 1, (status, took, text)


def timed_post(url: str, kwargs: dict) -> tuple[int, float, str]:
    started = time.monotonic()
    answer = requests.post(url, json=rpc("ping", 1), timeout=GRACE + 3, **kwargs)
    return answer.status_code, time.monotonic() - started, answer.text

class Traffic:
    """Clients posting steadily, each on its own session, each POST on a fresh connection
    and carrying a unique marker, so what the servers were sent tells what was delivered."""

    def __init__(self, base: str, sessions: list[tuple[str, dict]]) -> None:
        self.base = base
        self.stop = threading.Event()
        self.results: list[tuple] = []  # (marker, sent, answered, status, route, body)
        self.threads = [threading.Thread(target=self._post, args=(n, url, headers))
                        for n, (url, headers) in enumerate(sessions)]

    def _post(self, n: int, url: str, headers: dict) -> None:
        count = 0
        while not self.stop.is_set():
            marker = f"m{n}-{count}"
            count += 1
            message = rpc("tools/call", marker, name="echo", arguments={"text": marker}) \
                if "Mcp-Session-Id" in headers else rpc("ping", marker)
            sent = time.monotonic()
            try:
                answer = requests.post(url, json=message, headers=headers, timeout=10)
                status, route, body = (answer.status_code, answer.headers.get(
                    "Mcp-Proxy-Route", ""), answer.text)
            except requests.RequestException as exc:
                status, route, body = None, "", repr(exc)
            self.results.append((marker, sent, time.monotonic(), status, route, body))
            self.stop.wait(0.02)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self.threads), "a client hangs"


def ok(status: int | None, body: str) -> bool:
    """Answered as delivered: 202 (SSE), or 200 with the echo's result (Streamable)."""
    return status == 202 or (status == 200 and '"result"' in body)


def test_a_redis_restart_loses_no_delivered_message_and_routing_comes_back(redis_server,
                                                                            tmp_path):
    record = tmp_path / "sent.jsonl"
    with farm(redis_server, record) as proxy:
        listening(proxy.base)
        readers, sessions = [], []
        for _ in range(2):
            reader, endpoint = open_sse(proxy.base, timeout=10)
            readers.append(reader)
            sessions.append((endpoint, STREAM_HEADERS))
        for _ in range(3):
            init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                                 json=rpc("initialize", 0, protocolVersion="2025-06-18"))
            sessions.append((proxy.base + "/mcp", {
                **STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}))
        with Traffic(proxy.base, sessions) as traffic:
            time.sleep(1.0)  # traffic before the fault
            redis_server.stop()
            time.sleep(0.5)  # the outage
            redis_server.start()
            back = time.monotonic()
            time.sleep(4.0)  # traffic after it
        for reader in readers:
            reader.close()
    delivered = record.read_text()
    results = traffic.results
    assert len(results) > 50 and any(r[4].endswith("forwarded") for r in results)
    for marker, sent, answered, status, route, body in results:
        assert status is not None, (marker, body)  # every POST got an answer
        assert answered - max(sent, back) < 2.0, (marker, status, answered - back)
        if not ok(status, body):  # refused: only ever a message that was not delivered
            assert f'"{marker}"' not in delivered, (marker, status, route, body)
    after = [r for r in results if r[1] > back + 3.0]
    assert after and all(ok(r[3], r[5]) for r in after), [r for r in after if not ok(r[3], r[5])]
    assert any(r[4].endswith("forwarded") for r in after)


def test_a_worker_resumed_after_a_stop_serves_forwarded_requests_again(redis_server):
    with farm(redis_server) as proxy:
        workers = listening(proxy.base)
        stopped = next(iter(workers))
        headers = [streamable_on(proxy.base, tag) for tag in workers if tag != stopped]
        os.kill(workers[stopped], signal.SIGSTOP)
        try:
            time.sleep(15.0)  # the stall
        finally:
            os.kill(workers[stopped], signal.SIGCONT)
        resumed = time.monotonic()
        served = []  # (seconds after resuming, status) of what the resumed worker answered
        deadline = resumed + 20
        while len([1 for at, _ in served if at > 1.0]) < 6:
            assert time.monotonic() < deadline, f"the resumed worker answered only {served}"
            for session in headers:
                answer = requests.post(proxy.base + "/mcp", headers=session, timeout=10,
                                       json=rpc("ping", "p"))
                route = answer.headers.get("Mcp-Proxy-Route", "")
                if route.startswith(stopped):
                    served.append((time.monotonic() - resumed, answer.status_code))
        # its inbox stayed subscribed through the stop: not even its first answers are 503s
        assert all(status != 503 for _, status in served), served
        assert all(status == 200 for at, status in served if at > 1.0), served


def test_after_a_redis_restart_the_next_forwarded_request_goes_through(proxy_factory,
                                                                        redis_server,
                                                                        tmp_path):
    """Both proxies' publishing connections died with the old Redis while they had nothing
    to send (the default 5 s heartbeat sends nothing in a short blip): the next request and
    its answer must go out on new connections, not into the dead ones (a 503 on one side, an
    answer lost after delivery on the other)."""
    record = tmp_path / "sent.jsonl"
    args = ("--redis-url", redis_server.url, "--", *RAW_SERVER, "--record", str(record))
    owner, receiver = (proxy_factory(*args, env={"MCP_PROXY_ROUTE_HEADER": "1"})
                       for _ in range(2))
    for proxy in (owner, receiver):
        proxy.expect(r"listening on Redis")
    init = requests.post(owner.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    before = requests.post(receiver.base + "/mcp", headers=headers, timeout=5,
                           json=rpc("ping", "before"))
    assert before.status_code == 200 and before.headers["Mcp-Proxy-Route"].endswith(
        "forwarded")
    redis_server.stop()
    time.sleep(0.5)  # the outage
    redis_server.start()
    deadline = time.monotonic() + 5
    for proxy in (owner, receiver):
        while requests.get(proxy.base + "/status", timeout=5).json()["worker"][
                "redis"] != "connected":
            assert time.monotonic() < deadline, "an inbox did not come back"
            time.sleep(0.02)
    started = time.monotonic()
    after = requests.post(receiver.base + "/mcp", headers=headers, timeout=5,
                          json=rpc("ping", "after"))
    assert after.status_code == 200 and after.json()["id"] == "after", after.text
    assert time.monotonic() - started < 1.0
    assert record.read_text().count('"after"') == 1  # delivered once
