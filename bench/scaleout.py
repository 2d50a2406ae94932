"""Sessions across processes through Redis (issue 11): what forwarding costs a call, and the
calls/s of gunicorn with one and two workers.

``forwarding_latency``: two CLI proxies, A and B, on one redis-server, and a single proxy
without ``--redis-url`` (the single-process floor). A session is opened on A; the same small
echo call is timed sent to A (local) and sent to B (forwarded through Redis to A), and on a
session of the single proxy, in rounds that alternate the three so that machine noise hits
each alike; for Streamable HTTP (POST /mcp) and HTTP+SSE (POST /messages/ on A or B, the
answer read from A's stream). The proxies' route counters (/status ``worker``) prove which
path each call took. ``farm_throughput``: the bench's 20-session throughput run against
gunicorn -w 1 without Redis, -w 1 and -w 2 with it, with the CPU of every process of the
farm, of redis-server and of the load client over the same window.
"""

from __future__ import annotations

import contextlib
import copy
import time

from clients import KEEPALIVE, Proxy, SseSession, StreamableSession
from farm import Gunicorn, RedisServer
from measure import latency_samples, summary, throughput
from procs import BenchError, Processes, cpu_seconds, log, profiled
from wire import HttpConn

TRANSPORTS = {"streamable": StreamableSession, "sse": SseSession}
PATHS = ("single", "local", "forwarded")


def via(session, port: int):
    """The same session with its POSTs sent to another proxy (answers still read where the
    session's stream is, for SSE)."""
    other = copy.copy(session)
    if isinstance(session, SseSession):
        other.post_conn = HttpConn(port)
    else:
        other.conn = HttpConn(port)
    return other


def _routes(proxy: Proxy) -> dict[str, int]:
    worker = proxy.status()["worker"]
    return {key: worker[key] for key in ("local", "forwarded", "served")}


def _connected(proxy: Proxy) -> None:
    for _ in range(200):
        if proxy.status()["worker"]["redis"] == "connected":
            return
        time.sleep(0.05)
    raise BenchError(f"proxy {proxy.pid} is not listening on Redis")


def alternate(sessions: dict, calls: int, warmup: int, rounds: int, watch: dict[str, int]
              ) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """``calls`` timed calls on each session, in ``rounds`` rounds, the order rotated; and
    the CPU seconds each watched process (name -> pid) spent during each session's calls."""
    names = list(sessions)
    rid = 1000
    for name in names:
        latency_samples(sessions[name], warmup, rid)
        rid += warmup
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu = {name: dict.fromkeys(watch, 0.0) for name in names}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            before = {proc: cpu_seconds([pid]) for proc, pid in watch.items()}
            samples[name] += latency_samples(sessions[name], per_round, rid)
            for proc, pid in watch.items():
                cpu[name][proc] += cpu_seconds([pid]) - before[proc]
            rid += per_round
    return samples, cpu


def forwarding_latency(opts, procs: Processes, redis: RedisServer, calls: int, warmup: int,
                       rounds: int = 10) -> dict:
    extra = ("--keepalive", str(KEEPALIVE))
    started: list[Proxy] = []
    try:
        for name, more in (("proxy-single", ()), ("proxy-a", ("--redis-url", redis.url)),
                           ("proxy-b", ("--redis-url", redis.url))):
            started.append(Proxy(procs, name, extra + more))
        single, a, b = started
        _connected(a)
        _connected(b)
        out: dict = {"rounds": rounds}
        for transport, make in TRANSPORTS.items():
            log(f"scale-out: {transport} latency, single / local on A / forwarded B -> A")
            floor, owned = make(single.port), make(a.port)
            forwarded = None
            try:
                floor.initialize()
                owned.initialize()
                forwarded = via(owned, b.port)
                sessions = {"single": floor, "local": owned, "forwarded": forwarded}
                before = (_routes(a), _routes(b))
                with contextlib.ExitStack() as stack:
                    for who, proxy in (("a", a), ("b", b)):
                        stack.enter_context(profiled(opts, f"scaleout-{transport}-{who}",
                                                     proxy.pid))
                    samples, cpu = alternate(sessions, calls, warmup, rounds, {
                        "single": single.pid, "A": a.pid, "B": b.pid, "redis": redis.pid})
                after = (_routes(a), _routes(b))
            finally:
                if forwarded is not None:
                    (forwarded.post_conn if transport == "sse" else forwarded.conn).close()
                owned.close()
                floor.close()
            figures = {name: summary(samples[name]) for name in PATHS}
            sent = warmup + len(samples["forwarded"])
            routes = {"b_forwarded": after[1]["forwarded"] - before[1]["forwarded"],
                      "a_served": after[0]["served"] - before[0]["served"],
                      "a_forwarded": after[0]["forwarded"] - before[0]["forwarded"]}
            if routes["b_forwarded"] < sent or routes["a_served"] < sent or \
                    routes["a_forwarded"]:
                raise BenchError(f"{transport}: calls did not take the expected routes "
                                 f"({sent} sent to B): {routes}")
            out[transport] = {
                **figures, "routes": routes,
                "added_p50_ms": figures["forwarded"]["p50_ms"] - figures["local"]["p50_ms"],
                # CPU per call of each process, from /proc ticks (10 ms) summed over the rounds
                "cpu_ms_per_call": {path: {proc: 1000 * sec / len(samples[path])
                                           for proc, sec in cpu[path].items()}
                                    for path in PATHS}}
        return out
    finally:
        for proxy in started:
            proxy.stop()


FARMS = (("gunicorn -w 1, no Redis", 1, False), ("gunicorn -w 1, Redis", 1, True),
         ("gunicorn -w 2, Redis", 2, True))


def farm_throughput(procs: Processes, redis: RedisServer, sessions: int, duration: float,
                    warm: float) -> dict:
    """Every farm started first, then run one after the other per transport, so that the
    figures compared with each other are measured seconds apart."""
    farms: list[Gunicorn] = []
    out = {}
    try:
        for _, workers, with_redis in FARMS:
            farms.append(Gunicorn(procs, workers, redis.url if with_redis else None))
        for transport, make in TRANSPORTS.items():
            for (label, _, with_redis), farm in zip(FARMS, farms, strict=True):
                log(f"scale-out: {label}: {transport} throughput, {sessions} sessions")
                out[f"{label} | {transport}"] = _farm_run(
                    farm, make, redis.pid if with_redis else None, sessions, duration, warm)
    finally:
        for farm in farms:
            farm.stop()
    order = [label for label, _, _ in FARMS]
    return dict(sorted(out.items(), key=lambda item: order.index(item[0].split(" | ")[0])))


def _farm_run(farm: Gunicorn, make, redis_pid: int | None, sessions: int, duration: float,
              warm: float) -> dict:
    before = farm.routes()
    tp = throughput(lambda: make(farm.port), sessions, duration, warm, None, farm.pid,
                    groups=lambda: farm.groups(redis_pid))
    tp["servers_per_worker"] = farm.servers_per_worker
    farm.wait_idle()
    after = farm.routes()
    tp["routes"] = {key: after[key] - before[key] for key in after}
    return tp


def run_scaleout(opts, procs: Processes, cfg: dict) -> dict:
    redis = RedisServer(procs)
    try:
        return {"latency": forwarding_latency(opts, procs, redis, cfg["calls"], cfg["warmup"]),
                "throughput": farm_throughput(procs, redis, 20, cfg["duration"], cfg["warm"])}
    finally:
        redis.stop()
