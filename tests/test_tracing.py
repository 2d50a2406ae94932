"""Unit tests of core/tracing.py: when traces are on, spans, and W3C context in and out.

The SDK's in-memory exporter stands in for a collector. gevent runs unpatched here: its
greenlets still each get their own contextvars, which is what the explicit contexts are for.
"""

from __future__ import annotations

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.core import trace_setup, tracing
from mcp_proxy.errors import ConfigError

sdk = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def spans():
    exporter = sdk.InMemorySpanExporter()
    assert trace_setup.configure("test", environ={}, exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),  # a name alone sends nothing anywhere
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, True),
])
def test_wanted(environ, expected):
    assert trace_setup.wanted(environ) is expected


def test_off_everything_is_a_no_op():
    assert not trace_setup.configure("test", environ={})
    assert tracing.on is False
    assert tracing.start_span("x") is None
    tracing.end_span(None, error="e")
    assert tracing.context_from_headers({"traceparent": PARENT}) is None
    assert tracing.context_from_meta({"_meta": {"traceparent": PARENT}}) is None
    assert tracing.inject(None, {"a": 1}) == {"a": 1}
    assert tracing.current_ids() is None
    assert tracing.activate(None) is None


@pytest.mark.parametrize(("environ", "says"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: 'zipkin'"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "'http/json' is not supported"),
])
def test_settings_it_cannot_honour_are_one_line_errors(environ, says):
    with pytest.raises(ConfigError, match=says) as caught:
        trace_setup.configure("test", environ=environ)
    assert "\n" not in str(caught.value)
    assert tracing.on is False


def test_a_span_joins_the_clients_trace_and_hands_it_on(spans):
    parent = tracing.context_from_meta({"_meta": {"traceparent": PARENT, "tracestate": "a=b"}})
    span = tracing.start_span("tools/call", parent, kind="server",
                              attributes={"mcp.method": "tools/call", "absent": None})
    meta = tracing.inject(span, {"traceparent": "00-client-own-01", "progressToken": 1})
    assert meta["progressToken"] == 1
    assert meta["traceparent"].startswith(f"00-{TRACE}-")
    assert meta["traceparent"] != PARENT
    assert meta["tracestate"] == "a=b"
    tracing.end_span(span, error="error -32603", attributes={"mcp.outcome": "error -32603"})
    (done,) = spans.get_finished_spans()
    assert format(done.context.trace_id, "032x") == TRACE
    assert format(done.parent.span_id, "016x") == "b7ad6b7169203331"
    assert done.attributes == {"mcp.method": "tools/call", "mcp.outcome": "error -32603"}
    assert done.status.description == "error -32603"
    assert done.resource.attributes["service.name"] == "test"


def test_header_context(spans):
    found = tracing.context_from_headers({"traceparent": PARENT})
    span = tracing.start_span("POST /mcp", found, kind="server")
    assert tracing.ids_of(span)[0] == TRACE
    tracing.end_span(span)


def test_contexts_cross_greenlets_only_when_passed(spans):
    span = tracing.start_span("relay")
    token = tracing.activate(span)
    assert tracing.current_ids() == tracing.ids_of(span)
    # a new greenlet starts with an empty context: the current span does not follow
    assert gevent.spawn(tracing.current_ids).get(timeout=5) is None
    passed = tracing.context_of(span)
    child = gevent.spawn(lambda: tracing.start_span("child", passed)).get(timeout=5)
    tracing.end_span(child)
    tracing.deactivate(token)
    assert tracing.current_ids() is None
    tracing.end_span(span)
    parent_of = {s.name: s.parent for s in spans.get_finished_spans()}
    assert parent_of["child"].span_id == span.get_span_context().span_id


@pytest.mark.parametrize("bad", ["", "00-abc", f"00-{'0' * 32}-b7ad6b7169203331-01",
                                 f"ff-{TRACE}-b7ad6b7169203331-01", 42, None, ["x"]])
def test_malformed_context_is_no_context(spans, bad):
    assert tracing.context_from_headers({"traceparent": bad}) is None
    assert tracing.context_from_meta({"_meta": {"traceparent": bad}}) is None
    assert tracing.context_from_meta({"_meta": bad}) is None
    assert tracing.context_from_meta(bad) is None


@settings(max_examples=200, deadline=None, database=None)
@given(traceparent=st.text(max_size=80), tracestate=st.text(max_size=80))
def test_hostile_context_never_raises(traceparent, tracestate):
    exporter = sdk.InMemorySpanExporter()
    trace_setup.configure("test", environ={}, exporter=exporter)
    try:
        for found in (tracing.context_from_headers({"traceparent": traceparent,
                                                     "tracestate": tracestate}),
                      tracing.context_from_meta({"_meta": {"traceparent": traceparent,
                                                           "tracestate": tracestate}})):
            span = tracing.start_span("x", found)
            meta = tracing.inject(span, {})
            assert meta["traceparent"].count("-") == 3
            tracing.end_span(span)
    finally:
        tracing.shutdown()
