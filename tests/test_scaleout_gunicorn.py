"""Sessions across real gunicorn workers (``-k gevent -w N``) sharing one real redis-server.

Every request goes on a fresh connection, so the kernel hands it to whichever worker accepts
first: each session's requests land on its owner and on other workers alike, and the route
header (``MCP_PROXY_ROUTE_HEADER``) shows which path each one took.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_lifecycle import wait_until

from conftest import RAW_SERVER, STREAM_HEADERS, GunicornProcess, open_sse, pids_alive, rpc

PROXY_ARGS = "--keepalive 0.25 -- " + " ".join(RAW_SERVER)
POSTS = 60


def farm(redis_server, workers: int) -> GunicornProcess:
    return GunicornProcess(PROXY_ARGS, workers=workers, env={
        "MCP_PROXY_REDIS_URL": redis_server.url, "MCP_PROXY_ROUTE_HEADER": "1",
        "MCP_PROXY_BUS_PING": "0.3"})


def worker_status(base: str, predicate=lambda status: True, tries: int = 200) -> dict:
    """The /status of a worker for which ``predicate`` holds (each try a fresh connection)."""
    for _ in range(tries):
        status = requests.get(base + "/status", timeout=5).json()
        if status["worker"]["redis"] == "connected" and predicate(status):
            return status
        time.sleep(0.02)
    raise AssertionError("no worker answered /status as wanted")


def all_listening(base: str, workers: int) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only workers {seen} listen on Redis"
        seen.add(worker_status(base)["worker"]["id"])
    return seen


def sse_session(base: str) -> list[str]:
    reader, endpoint = open_sse(base, timeout=20)
    routes = []
    for n in range(POSTS):
        answer = requests.post(endpoint, json=rpc("ping", n if n % 2 else f"s{n}"),
                               timeout=15)
        assert answer.status_code == 202, answer.text
        routes.append(answer.headers["Mcp-Proxy-Route"].split()[1])
    got = [reader.next_message()["id"] for _ in range(POSTS)]
    reader.close()
    assert got == [n if n % 2 else f"s{n}" for n in range(POSTS)]
    return routes


def streamable_session(base: str) -> list[str]:
    init = requests.post(base + "/mcp", headers=STREAM_HEADERS, timeout=15,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    routes = []
    for n in range(POSTS):
        request_id = n if n % 2 else f"s{n}"
        answer = requests.post(base + "/mcp", headers=headers, timeout=15, json=rpc(
            "tools/call", request_id, name="echo", arguments={"text": str(n)}))
        assert answer.json() == {"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": str(n)}]}}
        routes.append(answer.headers["Mcp-Proxy-Route"].split()[1])
    return routes


@pytest.mark.parametrize("workers", [2, 4])
def test_every_post_of_every_session_arrives_once_in_order(redis_server, workers):
    with farm(redis_server, workers) as proxy:
        all_listening(proxy.base, workers)
        with ThreadPoolExecutor(8) as pool:
            runs = [pool.submit(sse_session, proxy.base) for _ in range(6)]
            runs += [pool.submit(streamable_session, proxy.base) for _ in range(6)]
            routes = [route for run in runs for route in run.result(timeout=120)]
    assert {"local", "forwarded"} <= set(routes)


def test_an_owner_worker_killed_leaves_404s_and_a_replacement(redis_server):
    with farm(redis_server, 3) as proxy:
        workers = all_listening(proxy.base, 3)
        reader, endpoint = open_sse(proxy.base, timeout=10)
        session_id = endpoint.rsplit("=", 1)[1]
        assert requests.post(endpoint, json=rpc("ping", 1), timeout=15).status_code == 202
        assert reader.next_message()["id"] == 1
        owner = worker_status(proxy.base, lambda s: s["worker"]["id"] == session_id[:8])
        children = [s["child"]["pid"] for s in owner["session_details"] if s["child"]]
        assert children
        survivor, survivor_url = None, None
        while survivor is None:  # a session owned by another worker
            candidate, url = open_sse(proxy.base, timeout=10)
            if url.rsplit("=", 1)[1][:8] != session_id[:8]:
                survivor, survivor_url = candidate, url
            else:
                candidate.close()

        os.kill(owner["worker"]["pid"], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                            EOFError)):
            reader.next_event()  # its stream ends with it
        assert time.monotonic() - started < 1
        answer = requests.post(endpoint, json=rpc("ping", 2), timeout=15)
        assert answer.status_code == 404, answer.text
        assert time.monotonic() - started < 2.0 + 1.0
        wait_until(lambda: not pids_alive(children), 2)
        for n in range(20):
            assert requests.post(survivor_url, json=rpc("ping", n), timeout=15
                                 ).status_code == 202
        assert [survivor.next_message()["id"] for _ in range(20)] == list(range(20))
        survivor.close()
        replacement = worker_status(proxy.base, lambda s: s["worker"]["id"] not in workers)
        new_tag = replacement["worker"]["id"]
        for _ in range(100):  # new sessions are opened on the replacement worker too
            fresh, url = open_sse(proxy.base, timeout=10)
            fresh.close()
            if url.rsplit("=", 1)[1].startswith(new_tag):
                break
        else:
            raise AssertionError(f"no session opened on the replacement worker {new_tag}")


def test_a_client_leaving_a_forwarded_stream_is_told_to_the_owner(redis_server):
    with farm(redis_server, 2) as proxy:
        all_listening(proxy.base, 2)
        init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=15,
                             json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
        for attempt in range(50):  # until a held call lands away from its owner
            call = requests.post(proxy.base + "/mcp", headers=headers, stream=True,
                                 timeout=15, json=rpc("tools/call", attempt, name="hold"))
            forwarded = call.headers["Mcp-Proxy-Route"].endswith("forwarded")
            call.close()  # the receiving worker sees it; a forwarded one sends a cancel
            if forwarded:
                break
        else:
            raise AssertionError("no call was forwarded in 50 tries")
        owner = init.headers["Mcp-Session-Id"][:8]

        # the owner counts every client gone from a stream of its session: the local
        # closes, and the forwarded one once the cancel reached it
        counted = f'mcp_proxy_client_disconnects_total{{transport="streamable"}} {attempt + 1}.0'

        def owner_saw_it() -> bool:
            page = requests.get(proxy.base + "/metrics", timeout=5).text
            return f'worker="{owner}"' in page and counted in page
        wait_until(owner_saw_it, 5, interval=0.01)
        answer = requests.post(proxy.base + "/mcp", headers=headers, timeout=15,
                               json=rpc("ping", "after"))
        assert answer.json()["id"] == "after"

