"""Traces in server mode, end to end: the real command (or gunicorn) with its spans written
to a file (tests/span_file.py), and raw_server recording what it was sent, on every path:
a session's own child (Streamable HTTP and SSE), a shared child, the 2026-07-28 lane, a
request forwarded through Redis between gunicorn workers, and once over OTLP/HTTP to a
receiver this test runs. The ``traceparent`` the server process gets in ``_meta`` must
belong to the client's trace and name the proxy's span of that request.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from span_file import read_spans
from test_modern import MODERN, headers_for, modern
from test_shared import recorded

from conftest import RAW_SERVER, STREAM_HEADERS, TESTS, GunicornProcess, ProxyProcess, open_sse, rpc

pytest.importorskip("opentelemetry.sdk.trace")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"
LAUNCHER = (sys.executable, str(TESTS / "span_file.py"))
NO_OTEL = {key: "" for key in os.environ if key.startswith("OTEL_")}


@pytest.fixture
def traced(tmp_path):
    """Start the command with spans to a file: ``traced(*args)``; the proxy has ``spans``
    (the file) and ``record`` (what raw_server was sent)."""
    started: list[ProxyProcess] = []

    def start(*args: str, server: tuple = (), env: dict | None = None) -> ProxyProcess:
        spans, record = tmp_path / f"spans{len(started)}.jsonl", tmp_path / "sent.jsonl"
        proxy = ProxyProcess(*args, "--", *RAW_SERVER, "--record", str(record), *server,
                             env={**NO_OTEL, **(env or {})},
                             command=(*LAUNCHER, str(spans), "cli"))
        started.append(proxy)
        proxy.spans, proxy.record = spans, record
        return proxy.started()

    yield start
    for proxy in started:
        proxy.stop()


def named(spans: list[dict], name: str) -> list[dict]:
    return [span for span in spans if span["name"] == name]


def wait_for(proxy, name: str, count: int = 1) -> list[dict]:
    spans = read_spans(proxy.spans, lambda found: len(named(found, name)) >= count)
    assert len(named(spans, name)) >= count, (name, spans)
    return spans


def sent_call(record, request_id=None) -> dict:
    calls = [m for m in recorded(record) if m.get("method") == "tools/call"]
    return calls[-1] if request_id is None else next(m for m in calls if m["id"] == request_id)


def echo(request_id=1, text="hi", **meta) -> dict:
    message = rpc("tools/call", request_id, name="echo", arguments={"text": text})
    if meta:
        message["params"]["_meta"] = meta
    return message


def test_per_session_child_joins_the_header_trace_and_hands_it_on(traced):
    proxy = traced()
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    body = json.dumps(echo(7)).encode()
    answer = requests.post(proxy.base + "/mcp", data=body, timeout=10,
                           headers={**headers, "traceparent": TRACEPARENT})
    assert answer.json()["id"] == 7  # the client's own id and answer, untouched
    spans = wait_for(proxy, "tools/call echo")
    (call,) = named(spans, "tools/call echo")
    http = next(s for s in spans if s["span_id"] == call["parent_id"])
    assert (http["name"], http["kind"], http["parent_id"]) == ("POST /mcp", "server",
                                                               CLIENT_SPAN)
    assert http["attributes"]["http.response.status_code"] == 200
    assert call["trace_id"] == http["trace_id"] == TRACE
    assert call["status"] == "unset"
    assert call["attributes"] == {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo", "jsonrpc.request.id": "7",
        "mcp.session.id": init.headers["Mcp-Session-Id"], "mcp.proxy.server": "default",
        "mcp.proxy.transport": "streamable", "mcp.proxy.era": "legacy",
        "mcp.proxy.request.bytes": len(body), "mcp.proxy.outcome": "ok",
        "mcp.proxy.response.bytes": len(answer.content)}
    sent = sent_call(proxy.record)
    assert sent["id"] == 7
    assert sent["params"]["_meta"]["traceparent"] == f"00-{TRACE}-{call['span_id']}-01"
    initialize = named(spans, "initialize")[0]  # no context from the client: our own trace
    assert initialize["trace_id"] != TRACE and initialize["kind"] == "internal"


def test_sse_takes_the_context_in_meta_and_keeps_the_rest_of_meta(traced):
    proxy = traced()
    reader, endpoint = open_sse(proxy.base, timeout=20)
    requests.post(endpoint, json=rpc("initialize", 0, protocolVersion="2025-06-18"),
                  timeout=10)
    assert reader.next_message()["id"] == 0
    meta = {"traceparent": TRACEPARENT, "tracestate": "vendor=1", "progressToken": "p1"}
    assert requests.post(endpoint, json=echo("a", **meta), timeout=10).status_code == 202
    assert reader.next_message()["id"] == "a"
    reader.close()
    (call,) = named(wait_for(proxy, "tools/call echo"), "tools/call echo")
    assert (call["trace_id"], call["parent_id"], call["kind"]) == (TRACE, CLIENT_SPAN,
                                                                   "server")
    assert call["attributes"]["mcp.proxy.transport"] == "sse"
    sent = sent_call(proxy.record)["params"]["_meta"]
    assert sent == {"traceparent": f"00-{TRACE}-{call['span_id']}-01", "tracestate": "vendor=1",
                    "progressToken": "p1"}


def test_shared_child_each_client_in_its_own_trace(traced):
    proxy = traced("--shared-child")
    traces = {"a": "a" * 32, "b": "b" * 32}
    for who, trace in traces.items():
        init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                             json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
        answer = requests.post(proxy.base + "/mcp", headers=headers, timeout=10, json=echo(
            1, who, traceparent=f"00-{trace}-{CLIENT_SPAN}-01"))
        assert answer.json()["id"] == 1 and answer.json()["result"]["content"][0]["text"] == who
    spans = named(wait_for(proxy, "tools/call echo", 2), "tools/call echo")
    sent = {m["params"]["arguments"]["text"]: m for m in recorded(proxy.record)
            if m.get("method") == "tools/call"}
    assert len({m["id"] for m in sent.values()}) == 2  # the multiplexer's ids, as before
    for who, trace in traces.items():
        (span,) = [s for s in spans if s["trace_id"] == trace]
        assert sent[who]["params"]["_meta"]["traceparent"] == f"00-{trace}-{span['span_id']}-01"


def test_a_shared_child_that_dies_mid_call_ends_the_span_with_an_error(traced):
    proxy = traced("--shared-child")
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    answer = requests.post(proxy.base + "/mcp", headers=headers, timeout=10,
                           json=rpc("tools/call", 4, name="crash", arguments={}))
    assert "error" in answer.text, answer.text
    (span,) = named(wait_for(proxy, "tools/call crash"), "tools/call crash")
    assert span["status"] == "error"
    assert span["attributes"]["rpc.jsonrpc.error_code"] < 0


def test_modern_lane(traced):
    proxy = traced()
    message = modern("tools/call", 3, name="echo", arguments={"text": "m"},
                     _meta={"traceparent": TRACEPARENT})
    answer = requests.post(proxy.base + "/mcp", json=message, headers=headers_for(message),
                           timeout=15)
    assert answer.json()["id"] == 3, answer.text
    (call,) = named(wait_for(proxy, "tools/call echo"), "tools/call echo")
    assert (call["trace_id"], call["parent_id"]) == (TRACE, CLIENT_SPAN)
    assert call["attributes"]["mcp.proxy.era"] == "modern"
    assert call["attributes"]["mcp.proxy.outcome"] == "ok"
    sent = sent_call(proxy.record)["params"]["_meta"]
    assert sent["traceparent"] == f"00-{TRACE}-{call['span_id']}-01"
    assert sent["io.modelcontextprotocol/protocolVersion"] == MODERN


def test_every_span_ends_with_an_error_when_its_call_does(traced):
    proxy = traced()
    reader, endpoint = open_sse(proxy.base, timeout=20)
    requests.post(endpoint, json=rpc("initialize", 0, protocolVersion="2025-06-18"),
                  timeout=10)
    reader.next_message()
    requests.post(endpoint, json=rpc("tools/call", 1, name="hold", arguments={}), timeout=10)
    requests.post(endpoint, json=rpc("notifications/cancelled", None, requestId=1), timeout=10)
    requests.post(endpoint, json=rpc("nope", 2), timeout=10)
    assert reader.next_message()["error"]["code"] == -32601
    requests.post(endpoint, json=rpc("tools/call", 3, name="crash", arguments={}), timeout=10)
    assert reader.next_message()["id"] == 3  # the child died: an error answer
    reader.close()
    spans = wait_for(proxy, "tools/call crash")
    hold, nope, crash = (named(spans, name)[0] for name in ("tools/call hold", "nope",
                                                            "tools/call crash"))
    assert (hold["status"], hold["attributes"]["mcp.proxy.outcome"]) == ("error", "cancelled")
    assert nope["attributes"]["rpc.jsonrpc.error_code"] == -32601
    assert (nope["status"], nope["attributes"]["mcp.proxy.outcome"]) == ("error",
                                                                         "error -32601")
    assert crash["status"] == "error" and crash["description"].startswith("no answer")


def test_hostile_context_is_ignored_never_an_error(traced):
    proxy = traced()
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    values = st.one_of(st.text(max_size=60), st.integers(), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(
                           st.text(max_size=5), st.integers(), max_size=2))
    numbers = iter(range(1, 10_000))

    @settings(max_examples=60, deadline=None, database=None)
    @given(header=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
           meta=st.one_of(values, st.dictionaries(st.sampled_from(
               ["traceparent", "tracestate", "x"]), values, max_size=3)))
    def post(header, meta):
        request_id = next(numbers)
        message = echo(request_id)
        message["params"]["_meta"] = meta
        answer = requests.post(proxy.base + "/mcp", json=message, timeout=10,
                               headers={**headers, "traceparent": header.strip()})
        assert answer.status_code == 200 and answer.json()["id"] == request_id, answer.text
        sent = sent_call(proxy.record, request_id)["params"]["_meta"]
        if isinstance(meta, dict):  # the rest of _meta as it was; the context is ours
            assert {k: v for k, v in sent.items() if k not in ("traceparent", "tracestate")} \
                == {k: v for k, v in meta.items() if k not in ("traceparent", "tracestate")}
            assert sent["traceparent"].startswith("00-")
        else:
            assert sent == meta  # not an object: left as the client sent it

    post()
    assert "Traceback" not in proxy.stderr()


def test_modern_request_abandoned_by_its_client(traced):
    proxy = traced()
    message = modern("tools/call", 5, name="hold", arguments={})
    with pytest.raises(requests.Timeout):
        requests.post(proxy.base + "/mcp", json=message, headers=headers_for(message),
                      timeout=1)
    (span,) = named(wait_for(proxy, "tools/call hold"), "tools/call hold")
    assert span["status"] == "error" and span["attributes"]["mcp.proxy.outcome"] == "no answer"


def test_json_log_lines_and_the_audit_line_carry_the_ids(traced):
    proxy = traced("--log-format", "json", "--log-calls")
    init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    requests.post(proxy.base + "/mcp", json=echo(1, traceparent=TRACEPARENT), headers=headers,
                  timeout=10)
    (call,) = named(wait_for(proxy, "tools/call echo"), "tools/call echo")
    audit = json.loads(proxy.expect(r'"logger": "mcp_proxy.audit"').string)
    assert (audit["trace_id"], audit["span_id"]) == (TRACE, call["span_id"])
    assert "arguments" not in audit
    started = json.loads(proxy.expect(r"started .* \(pid \d+\)").string)
    assert started["trace_id"] == named(read_spans(proxy.spans), "POST /mcp")[0]["trace_id"]


def test_forwarded_through_redis_one_trace_across_workers(tmp_path, redis_server):
    spans, record = tmp_path / "spans.jsonl", tmp_path / "sent.jsonl"
    args = "--keepalive 0.25 -- " + " ".join([*RAW_SERVER, "--record", str(record)])
    with GunicornProcess(args, workers=2, command=(*LAUNCHER, str(spans), "gunicorn"), env={
            **NO_OTEL, "MCP_PROXY_REDIS_URL": redis_server.url, "MCP_PROXY_ROUTE_HEADER": "1",
            "MCP_PROXY_BUS_PING": "0.3"}) as farm:
        init = requests.post(farm.base + "/mcp", headers=STREAM_HEADERS, timeout=15,
                             json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
                   "traceparent": TRACEPARENT}
        for n in range(1, 200):  # each on a new connection: some land on the other worker
            answer = requests.post(farm.base + "/mcp", json=echo(n), headers=headers,
                                   timeout=15)
            assert answer.json()["id"] == n
            if answer.headers["Mcp-Proxy-Route"].endswith("forwarded"):
                break
        else:
            pytest.fail("no request landed on the worker that does not own the session")

        def the_whole_chain(found: list[dict]) -> bool:
            by_id = {x["span_id"]: x for x in found}
            calls = [x for x in found if x["attributes"].get("jsonrpc.request.id") == str(n)]
            owner = by_id.get(calls[0]["parent_id"]) if calls else None
            return owner is not None and owner["parent_id"] in by_id

        # each span ends after its child's (it lasts as long as its answer): the call's, then
        # the owner's, then the HTTP span of the worker the request landed on
        found = read_spans(spans, the_whole_chain)
    call = next(s for s in found if s["attributes"].get("jsonrpc.request.id") == str(n))
    owner = next(s for s in found if s["span_id"] == call["parent_id"])
    landed = next(s for s in found if s["span_id"] == owner["parent_id"])
    assert owner["name"] == "forwarded POST /mcp" and owner["pid"] == call["pid"]
    assert landed["parent_id"] == CLIENT_SPAN and landed["pid"] != owner["pid"]
    assert landed["attributes"]["mcp.proxy.route"] == "forwarded"
    assert {call["trace_id"], owner["trace_id"], landed["trace_id"]} == {TRACE}
    sent = sent_call(record, n)["params"]["_meta"]["traceparent"]
    assert sent == f"00-{TRACE}-{call['span_id']}-01"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps each POSTed ExportTraceServiceRequest."""

    received: list = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, self.headers["Content-Type"], request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_otlp_http_to_a_receiver(proxy_factory):
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        proxy = proxy_factory("--", *RAW_SERVER, env={
            **NO_OTEL, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
            "OTEL_SERVICE_NAME": "proxy-under-test", "OTEL_BSP_SCHEDULE_DELAY": "50"})
        init = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                             json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        requests.post(proxy.base + "/mcp", json=echo(1, traceparent=TRACEPARENT), timeout=10,
                      headers={**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]})

        def spans() -> list:
            return [(resource.resource, span) for _, _, request in list(Collector.received)
                    for resource in request.resource_spans for scope in resource.scope_spans
                    for span in scope.spans]

        deadline = time.monotonic() + 15
        while not any(span.name == "tools/call echo" for _, span in spans()):
            assert time.monotonic() < deadline, "no span reached the receiver"
            time.sleep(0.05)
        resource, call = next((r, s) for r, s in spans() if s.name == "tools/call echo")
        assert call.trace_id.hex() == TRACE
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] \
            == "proxy-under-test"
        path, kind, _ = Collector.received[0]
        assert (path, kind) == ("/v1/traces", "application/x-protobuf")
    finally:
        collector.shutdown()
        collector.server_close()


def test_off_nothing_changes(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--", *RAW_SERVER, "--record", str(record), env=NO_OTEL)
    reader, endpoint = open_sse(proxy.base, timeout=20)
    body = json.dumps(echo(1, traceparent=TRACEPARENT)).encode()
    answer = requests.post(endpoint, data=body, timeout=10, headers={
        "traceparent": TRACEPARENT, "Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text
    assert reader.next_message()["id"] == 1
    reader.close()
    assert record.read_bytes().splitlines()[-1] == body  # the client's bytes, as they were


def test_configured_without_the_sdk_warns_and_serves(proxy_factory, tmp_path):
    shadow = tmp_path / "shadow" / "opentelemetry"  # an opentelemetry without its SDK
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    proxy = proxy_factory("--", *RAW_SERVER, env={
        **NO_OTEL, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    proxy.expect(r"the OpenTelemetry SDK is not installed: no traces \(pip install "
                 r"'mcp-proxy-gevent\[otel\]'\)")
    answer = requests.post(proxy.base + "/mcp", headers=STREAM_HEADERS, timeout=10,
                           json=rpc("initialize", 0, protocolVersion="2025-06-18"))
    assert answer.status_code == 200


@pytest.mark.parametrize(("environ", "says"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: 'zipkin' is not one we know"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json\n"},
     "'http/json' is not supported"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"}, None),
])
def test_settings_the_sdk_cannot_honour(proxy_factory, environ, says):
    proxy = proxy_factory("--", *RAW_SERVER, env={**NO_OTEL, **environ}, wait=False)
    if says is None:  # the SDK itself warns and takes its default: the proxy serves
        proxy.started()
        return
    assert proxy.proc.wait(20) == 1
    proxy.expect(says)
    assert "Traceback" not in proxy.stderr()


def test_a_request_id_used_twice_ends_the_first_span_unanswered():
    """A client (or a remote's caller) that reuses an id in flight: the first call's span ends
    as unanswered, the answer ends the second, none is left open (core/call_spans.start_call,
    which both modes' spans open calls through)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mcp_proxy.core import call_spans, jsonrpc, trace_setup, tracing

    exporter = InMemorySpanExporter()
    assert trace_setup.configure("test", {}, exporter)
    try:
        open_spans: dict = {}
        for name in ("first", "second"):
            call_spans.start_call(open_spans, jsonrpc.parse(json.dumps(rpc(
                "tools/call", 7, name=name, arguments={})).encode()), None, "client", {})
        tracing.end_span(open_spans.pop(jsonrpc.id_key(7)))
        assert open_spans == {}
        ended = [(span.name, span.status.description) for span in exporter.get_finished_spans()]
        assert ended == [("tools/call first",
                          "no answer: the client sent another request with its id"),
                         ("tools/call second", None)], ended
    finally:
        tracing.shutdown()
