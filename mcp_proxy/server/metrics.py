"""Prometheus metrics of server mode: their names and help, and the cheap ways to record them.

Each app has its own ``CollectorRegistry``, so several apps in one process (tests) never
clash. What moves per message or per HTTP answer is a plain int bumped in place and turned
into samples at scrape time: under gevent a prometheus_client ``Counter.inc`` takes a lock
(~0.7 us), a dict bump costs ~0.05 us. Rare events (spawns, exits, disconnects) use
prometheus_client's own counters. Nothing here reads or changes a message beyond its kind,
method, id and size.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.server.member_metrics import member_samples

KINDS = (jsonrpc.REQUEST, jsonrpc.NOTIFICATION, jsonrpc.RESPONSE)
DIRECTIONS = ("client_to_server", "server_to_client")
SESSION_TRANSPORTS = ("sse", "streamable")  # what a session is (a modern request is none)
_BYTES = "bytes"
# tool calls run from milliseconds (an echo) to minutes (a build, a crawl)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# a "_created" timestamp beside every counter doubles the page and no dashboard reads it
disable_created_metrics()


def server_label(name: str) -> str:
    """The ``server`` label of a configured server: the default one is ``default``."""
    return name or "default"


def _tally() -> dict[str, int]:
    return dict.fromkeys((*KINDS, _BYTES), 0)


class Latency:
    """A histogram of plain ints: ``observe`` costs a bisect, not a lock."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative counts by upper bound, as Prometheus wants them."""
        found, running = [], 0
        for bound, count in zip((*map(floatToGoString, LATENCY_BUCKETS), "+Inf"), self.counts,
                                strict=True):
            running += count
            found.append((bound, running))
        return found


class RelayMeter:
    """Counts what one bridge relays, by direction, and times its tool calls."""

    __slots__ = ("_up", "_down", "_latency", "_calls")

    def __init__(self, up: dict[str, int], down: dict[str, int], latency: Latency) -> None:
        self._up, self._down, self._latency = up, down, latency
        # id_key of an open tools/call -> perf_counter at its start; one cancelled and never
        # answered stays until the bridge ends, as it does in the bridge's own in-flight dicts
        self._calls: dict = {}

    def client_to_server(self, message: Message) -> None:
        kind = message.kind
        tally = self._up
        tally[kind] += 1
        tally[_BYTES] += len(message.raw)
        if kind == jsonrpc.REQUEST and message.method == "tools/call":
            self._calls[jsonrpc.id_key(message.id)] = time.perf_counter()

    def server_to_client(self, message: Message) -> None:
        kind = message.kind
        tally = self._down
        tally[kind] += 1
        tally[_BYTES] += len(message.raw)
        if kind == jsonrpc.RESPONSE and self._calls:
            started = self._calls.pop(jsonrpc.id_key(message.id), None)
            if started is not None:
                self._latency.observe(time.perf_counter() - started)

    def watch(self, link, session: str | None, caller: str) -> None:
        """Who calls through this meter, until ``link`` ends: only the audit's meter
        (audit.py) keeps it."""


class Metrics:
    """The metrics of one app; ``sessions()`` gives its live sessions at scrape time."""

    def __init__(self, sessions: Callable[[], Iterable], servers: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self._sessions = sessions
        self._servers = [server_label(name) for name in servers]
        self._relayed = {s: {d: _tally() for d in DIRECTIONS} for s in self._servers}
        self._running = dict.fromkeys(self._servers, 0)
        self._answers: dict[str, int] = {}
        self.routing: Callable[[], dict] | None = None  # the router's status, with Redis
        self.remotes: Callable[[], dict] | None = None  # remote servers' status, if any
        self.members: Callable[[], dict] | None = None  # combined servers' members, if any
        # server label -> the meter of its bridges, for a server with an audit (app.py)
        self.audited: dict[str, Callable[..., RelayMeter]] = {}
        # with traces on, what wraps every meter (app.py: server/traced_meter.py)
        self.traced: Callable[[RelayMeter, str], RelayMeter] | None = None
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        self._started = Counter(
            "mcp_proxy_server_processes_started", "Server processes started",
            ["server"], registry=self.registry)
        self._exited = Counter(
            "mcp_proxy_server_processes_exited", "Server processes reaped, by exit code "
            "(negative: killed by that signal)", ["server", "code"], registry=self.registry)
        self._spawn_failures = Counter(
            "mcp_proxy_spawn_failures", "Server processes (or remote sessions) that could "
            "not be started",
            ["server"], registry=self.registry)
        self._disconnects = Counter(
            "mcp_proxy_client_disconnects", "Clients found gone while their session was open",
            ["transport"], registry=self.registry)
        self._latency: dict[str, Latency] = {}
        for server in list(self._servers):  # every series exists from the start, at zero
            self.add_server(server)

    def add_server(self, name: str) -> None:
        """Count for a server (at start, or added by a config reload), every series at zero;
        a server taken out keeps its series."""
        server = server_label(name)
        if server not in self._latency:
            if server not in self._servers:
                self._servers.append(server)
            self._relayed.setdefault(server, {d: _tally() for d in DIRECTIONS})
            self._running.setdefault(server, 0)
            self._latency[server] = Latency()
            self._started.labels(server)
            self._spawn_failures.labels(server)

    def relay_meter(self, server: str) -> RelayMeter:
        server = server_label(server)
        tallies = self._relayed[server]
        meter = self.audited.get(server, RelayMeter)
        made = meter(tallies[DIRECTIONS[0]], tallies[DIRECTIONS[1]], self._latency[server])
        # per bridge, not per message: with traces off, no message pays for them
        return made if self.traced is None else self.traced(made, server)

    def child_started(self, server: str) -> None:
        server = server_label(server)
        self._started.labels(server).inc()
        self._running[server] += 1

    def child_exited(self, server: str, code: int | None) -> None:
        server = server_label(server)
        self._exited.labels(server, "unknown" if code is None else str(code)).inc()
        self._running[server] -= 1

    def spawn_failed(self, server: str) -> None:
        self._spawn_failures.labels(server_label(server)).inc()

    def client_disconnected(self, transport: str) -> None:
        """Count a client found gone (a failed write, a dead stream) on ``transport``."""
        self._disconnects.labels(transport).inc()

    def count_answers(self, wsgi_app: Callable) -> Callable:
        """Wrap ``wsgi_app`` so every answer's status code is counted, guard rejections too."""
        answers = self._answers

        def counting_app(environ, start_response):
            def start(status, headers, exc_info=None):
                code = status[:3]
                answers[code] = answers.get(code, 0) + 1
                return start_response(status, headers, exc_info)

            return wsgi_app(environ, start)

        return counting_app

    def exposition(self) -> bytes:
        """Everything in the Prometheus text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator:
        """Samples computed at scrape time (the registry calls this)."""
        sessions = list(self._sessions())
        open_ = GaugeMetricFamily("mcp_proxy_sessions_open", "Client sessions open",
                                  labels=["server", "transport"])
        # every series from the start, at zero: an absent() alert must not fire on a quiet day
        counts = {(server, transport): 0 for server in self._servers
                  for transport in SESSION_TRANSPORTS}
        for session in sessions:
            key = (server_label(session.server_name), session.transport)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            open_.add_metric(key, count)
        yield open_
        yield GaugeMetricFamily(
            "mcp_proxy_queued_bytes", "Bytes queued for clients that read slower than their "
            "server writes", value=sum(getattr(s, "queued", 0) for s in sessions))
        running = GaugeMetricFamily("mcp_proxy_server_processes_running",
                                    "Server processes started and not yet reaped",
                                    labels=["server"])
        for server, count in self._running.items():
            running.add_metric([server], count)
        yield running
        messages = CounterMetricFamily("mcp_proxy_messages_relayed",
                                       "JSON-RPC messages relayed between clients and servers",
                                       labels=["server", "direction", "kind"])
        size = CounterMetricFamily("mcp_proxy_relayed_bytes",
                                   "Bytes of JSON-RPC messages relayed (without framing)",
                                   labels=["server", "direction"])
        for server, directions in self._relayed.items():
            for direction, tally in directions.items():
                for kind in KINDS:
                    messages.add_metric([server, direction, kind], tally[kind])
                size.add_metric([server, direction], tally[_BYTES])
        yield messages
        yield size
        answers = CounterMetricFamily("mcp_proxy_http_responses",
                                      "HTTP answers sent, by status code", labels=["code"])
        for code, count in sorted(self._answers.items()):
            answers.add_metric([code], count)
        yield answers
        latency = HistogramMetricFamily(
            "mcp_proxy_tool_call_seconds", "Round trip of a tools/call through the proxy: "
            "from its request leaving the client side to its response coming back",
            labels=["server"])
        for server, histogram in self._latency.items():
            latency.add_metric([server], histogram.buckets(), histogram.total)
        yield latency
        remotes = self.remotes() if self.remotes is not None else None
        if remotes:  # read at each scrape: a config reload adds and removes servers
            yield from _remote_samples(remotes)
        members = self.members() if self.members is not None else None
        if members:
            yield from member_samples(members)
        if self.routing is not None:
            yield from _routing_samples(self.routing())


def _remote_samples(remotes: dict[str, dict]) -> Iterator:
    """Per remote server (a ``"url"`` entry): whether it answers, and its remote sessions."""
    up = GaugeMetricFamily("mcp_proxy_remote_up", "1 when the remote server's last contact "
                           "worked and no session of it is reconnecting", labels=["server"])
    open_ = GaugeMetricFamily("mcp_proxy_remote_sessions", "Remote sessions open, by state",
                              labels=["server", "state"])
    for name, status in sorted(remotes.items()):
        up.add_metric([server_label(name)], 1 if status["state"] == "connected" else 0)
        recovering = status["recovering"]
        open_.add_metric([server_label(name), "connected"], status["remote_sessions"] - recovering)
        open_.add_metric([server_label(name), "recovering"], recovering)
    yield up
    yield open_


def _routing_samples(status: dict) -> Iterator:
    """The worker's tag, its Redis state, and its session requests by route."""
    info = GaugeMetricFamily("mcp_proxy_worker_info", "This worker's tag, which starts the id "
                             "of every session it owns", labels=["worker"])
    info.add_metric([status["id"]], 1)
    yield info
    yield GaugeMetricFamily("mcp_proxy_redis_connected", "1 while this worker's Redis inbox "
                            "is subscribed", value=int(status["redis"] == "connected"))
    routed = CounterMetricFamily("mcp_proxy_routed_requests", "Session requests by route: "
                                 "local (its session is here), forwarded (to its owner), "
                                 "served (for another worker)", labels=["route"])
    for route in ("local", "forwarded", "served"):
        routed.add_metric([route], status[route])
    yield routed
