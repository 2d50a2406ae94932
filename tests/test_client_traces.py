"""Traces in client mode, end to end: the real ``mcp-proxy URL`` with its spans written to a
file (tests/span_file.py), in front of a real server-mode mcp-proxy, itself traced the same
way, whose raw_server records what it was sent. A call from the desktop client must stay in
the desktop client's trace all the way: our span's parent is the client's ``_meta`` context,
the server-mode proxy's HTTP span is the child of our POST's ``traceparent`` header, its
request span the child of our ``_meta`` context, and the server process gets a ``_meta``
context of that same trace. A sign-in (tests/oauth_kit.py) and a recovery make their spans.
"""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from span_file import read_spans
from test_lifecycle import wait_until
from test_modern import modern
from test_shared import recorded
from test_traces import CLIENT_SPAN, LAUNCHER, NO_OTEL, TRACE, TRACEPARENT, echo, named

from conftest import INIT_PARAMS, RAW_SERVER, ProxyProcess, rpc
from mcp_proxy.core import tracing
from mcp_proxy.upstream.oauth.traced_step import traced
from mcp_proxy.upstream.sse_remote import SseUpstream
from mcp_proxy.upstream.streamable_remote import StreamableUpstream
from mcp_proxy.upstream.traced_remote import remote_class

pytest.importorskip("opentelemetry.sdk.trace")
pytest_plugins = ["oauth_kit"]  # auth_env, remote



@pytest.fixture
def server(tmp_path):
    """A traced server-mode mcp-proxy in front of raw_server, which records what it gets."""
    proxy = ProxyProcess("--port", "0", "--", *RAW_SERVER, "--record",
                         str(tmp_path / "sent.jsonl"), env=NO_OTEL,
                         command=(*LAUNCHER, str(tmp_path / "server-spans.jsonl"), "cli"))
    proxy.spans, proxy.record = tmp_path / "server-spans.jsonl", tmp_path / "sent.jsonl"
    yield proxy.started()
    proxy.stop()


@pytest.fixture
def client(clients, tmp_path):
    """``client(*args)``: the real ``mcp-proxy URL`` with its spans to a file (``spans``)."""

    def start(*args: str, env: dict | None = None):
        spans = tmp_path / "client-spans.jsonl"
        proxy = clients(*args, env={**NO_OTEL, **(env or {})},
                        command=(*LAUNCHER, str(spans), "cli"))
        proxy.spans = spans
        return proxy

    return start


def wait_for(path, name: str, count: int = 1) -> list[dict]:
    spans = read_spans(path, lambda found: len(named(found, name)) >= count)
    assert len(named(spans, name)) >= count, (name, spans)
    return spans


def sent_call(record, request_id) -> dict:
    return next(m for m in recorded(record) if m.get("method") == "tools/call"
                and m["id"] == request_id)


def test_a_call_stays_in_the_desktop_clients_trace_to_the_server_process(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp?key=secret")
    proxy.handshake()
    meta = {"traceparent": TRACEPARENT, "tracestate": "vendor=1", "progressToken": "p1"}
    answer = proxy.call(echo(7, **meta))
    assert answer["id"] == 7 and "result" in answer
    (ours,) = named(wait_for(proxy.spans, "tools/call echo"), "tools/call echo")
    assert (ours["kind"], ours["trace_id"], ours["parent_id"]) == ("client", TRACE, CLIENT_SPAN)
    assert ours["service"] == "mcp-proxy-client" and ours["status"] == "unset"
    attributes = ours["attributes"]
    assert attributes["url.full"] == server.base + "/mcp"  # never the query
    assert "secret" not in json.dumps(attributes)
    assert {key: attributes[key] for key in (
        "mcp.method.name", "gen_ai.tool.name", "jsonrpc.request.id", "mcp.proxy.transport",
        "mcp.proxy.era", "mcp.proxy.outcome", "server.address")} == {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo", "jsonrpc.request.id": "7",
        "mcp.proxy.transport": "streamable", "mcp.proxy.era": "legacy",
        "mcp.proxy.outcome": "ok", "server.address": "127.0.0.1"}
    assert attributes["mcp.session.id"] and attributes["mcp.proxy.response.bytes"] > 0
    # the server-mode proxy: its HTTP span is our header's child, its call span our _meta's
    theirs = wait_for(server.spans, "tools/call echo")
    (call,) = named(theirs, "tools/call echo")
    http = next(span for span in theirs if span["span_id"] == call["parent_id"] or
                span["parent_id"] == ours["span_id"] and span["name"] == "POST /mcp")
    assert http["parent_id"] == ours["span_id"] and http["trace_id"] == TRACE
    assert (call["trace_id"], call["parent_id"]) == (TRACE, ours["span_id"])
    sent = sent_call(server.record, 7)["params"]["_meta"]
    assert sent["traceparent"] == f"00-{TRACE}-{call['span_id']}-01"
    assert sent["progressToken"] == "p1" and sent["tracestate"] == "vendor=1"


def test_over_sse_the_header_and_meta_name_our_span(server, client):
    proxy = client("--transport", "sse", server.base + "/sse")
    proxy.handshake()
    assert proxy.call(echo("s", traceparent=TRACEPARENT))["id"] == "s"
    (ours,) = named(wait_for(proxy.spans, "tools/call echo"), "tools/call echo")
    assert ours["attributes"]["mcp.proxy.transport"] == "sse"
    assert ours["attributes"]["url.full"] == server.base + "/sse"
    assert (ours["trace_id"], ours["parent_id"]) == (TRACE, CLIENT_SPAN)
    theirs = wait_for(server.spans, "tools/call echo")
    posts = [span for span in theirs if span["name"].startswith("POST /messages")
             and span["parent_id"] == ours["span_id"]]
    assert len(posts) == 1 and posts[0]["trace_id"] == TRACE  # the header
    (call,) = named(theirs, "tools/call echo")
    assert call["parent_id"] == ours["span_id"]  # the _meta
    assert sent_call(server.record, "s")["params"]["_meta"]["traceparent"].startswith(
        f"00-{TRACE}-")


def test_no_context_from_the_client_a_trace_of_our_own(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp")
    proxy.handshake()
    message = rpc("tools/list", 3)
    assert "result" in proxy.call(message)
    spans = wait_for(proxy.spans, "tools/list")
    (ours,) = named(spans, "tools/list")
    assert ours["parent_id"] is None and ours["trace_id"] != TRACE
    (init,) = named(spans, "initialize")
    assert init["attributes"]["mcp.proxy.outcome"] == "ok"
    (theirs,) = named(wait_for(server.spans, "tools/list"), "tools/list")
    assert (theirs["trace_id"], theirs["parent_id"]) == (ours["trace_id"], ours["span_id"])


def test_a_bridged_call_each_round_in_the_clients_trace(server, client):
    proxy = client("--transport", "streamablehttp", "--protocol-era", "modern",
                   server.base + "/mcp")
    assert proxy.handshake()["result"]["serverInfo"]
    answer = proxy.call(echo(8, traceparent=TRACEPARENT))
    assert answer["result"]["content"][0]["text"] == "hi"
    spans = wait_for(proxy.spans, "tools/call echo")
    (ours,) = named(spans, "tools/call echo")
    assert (ours["trace_id"], ours["parent_id"]) == (TRACE, CLIENT_SPAN)
    assert ours["attributes"]["mcp.proxy.era"] == "modern"
    assert ours["attributes"]["jsonrpc.request.id"] == "8"  # the leg has the client's id
    (probe,) = named(spans, "server/discover")  # the bridge's own: a trace of its own
    assert probe["parent_id"] is None and probe["attributes"]["mcp.proxy.outcome"] == "ok"
    (theirs,) = named(wait_for(server.spans, "tools/call echo"), "tools/call echo")
    assert (theirs["trace_id"], theirs["parent_id"]) == (TRACE, ours["span_id"])
    sent = next(m for m in recorded(server.record) if m.get("method") == "tools/call")
    assert sent["params"]["_meta"]["traceparent"] == f"00-{TRACE}-{theirs['span_id']}-01"
    proxy.send(rpc("tools/call", 9, name="hold", arguments={}))
    wait_until(lambda: any(m.get("params", {}).get("name") == "hold"
                           for m in recorded(server.record)))
    proxy.send(rpc("notifications/cancelled", None, requestId=9))  # closes the leg's stream
    (hold,) = named(wait_for(proxy.spans, "tools/call hold"), "tools/call hold")
    assert hold["attributes"]["mcp.proxy.outcome"] == "cancelled"


def test_a_modern_clients_round_is_input_required(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp")
    answer = proxy.call(modern("tools/call", 3, name="mrtr", arguments={},
                               _meta={"traceparent": TRACEPARENT}))
    assert answer["result"]["resultType"] == "input_required"
    (ours,) = named(wait_for(proxy.spans, "tools/call mrtr"), "tools/call mrtr")
    assert (ours["trace_id"], ours["parent_id"]) == (TRACE, CLIENT_SPAN)
    assert (ours["attributes"]["mcp.proxy.era"], ours["attributes"]["mcp.proxy.outcome"]) == (
        "modern", "input required")
    assert "mcp.session.id" not in ours["attributes"]  # the era has no session


def test_errors_end_their_spans_with_an_error(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp")
    proxy.handshake()
    assert proxy.call(rpc("nope", 2))["error"]["code"] == -32601
    (nope,) = named(wait_for(proxy.spans, "nope"), "nope")
    assert (nope["status"], nope["attributes"]["mcp.proxy.outcome"],
            nope["attributes"]["rpc.jsonrpc.error_code"]) == ("error", "error -32601", -32601)
    proxy.send(rpc("tools/call", 4, name="hold", arguments={}))
    proxy.send(rpc("notifications/cancelled", None, requestId=4))
    (cancelled,) = named(wait_for(proxy.spans, "tools/call hold"), "tools/call hold")
    assert (cancelled["status"], cancelled["description"]) == ("error", "cancelled by the client")
    assert cancelled["attributes"]["mcp.proxy.outcome"] == "cancelled"
    proxy.send(rpc("tools/call", 5, name="hold", arguments={}))
    assert proxy.close() == 0  # stdin closed: the held call never had an answer
    held = named(wait_for(proxy.spans, "tools/call hold", 2), "tools/call hold")[1]
    assert held["attributes"]["jsonrpc.request.id"] == "5"
    assert held["status"] == "error", held  # the POST cut short, or never answered
    assert held["attributes"]["mcp.proxy.outcome"] in ("no answer", "error -32603"), held


def test_a_recovery_makes_its_span(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp")
    proxy.handshake()
    assert "result" in proxy.call(echo(1))
    (first,) = named(wait_for(proxy.spans, "tools/call echo"), "tools/call echo")
    session = first["attributes"]["mcp.session.id"]
    gone = requests.delete(server.base + "/mcp", headers={"Mcp-Session-Id": session}, timeout=5)
    assert gone.status_code in (200, 204)
    proxy.wait_stderr("reconnected and re-initialized", timeout=30)
    assert "result" in proxy.call(echo(2), timeout=30)
    spans = wait_for(proxy.spans, "mcp-proxy recovery")
    (recovery,) = named(spans, "mcp-proxy recovery")
    assert recovery["status"] == "unset"
    assert recovery["attributes"]["mcp.proxy.recovery.attempts"] >= 1
    assert recovery["attributes"]["mcp.proxy.outcome"] == "ok"
    assert recovery["attributes"]["mcp.proxy.recovery.reason"] == \
        "the remote no longer knows our session (404)"  # the GET stream's or a POST's
    # the replayed initialize has no span of its own: it is the recovery's
    assert len(named(spans, "initialize")) == 1


def test_a_sign_in_makes_its_spans(auth_env, remote, client):
    server = remote()
    proxy = client("--transport", "streamablehttp", server.base + "/mcp",
                   env=auth_env)
    answer = proxy.call(rpc("initialize", 0, **INIT_PARAMS), timeout=30)
    assert "result" in answer, answer
    spans = wait_for(proxy.spans, "initialize")
    by_id = {span["span_id"]: span for span in spans}
    (sign_in,) = named(spans, "oauth sign-in")
    (init,) = named(spans, "initialize")
    assert sign_in["parent_id"] == init["span_id"]  # the request whose POST met the 401
    assert sign_in["status"] == "unset"
    steps = {span["name"]: span for span in spans if span["parent_id"] == sign_in["span_id"]}
    assert {"oauth discovery", "oauth browser sign-in"} <= set(steps)
    assert steps["oauth discovery"]["attributes"]["oauth.issuer"]
    inner = [span for span in spans
             if by_id.get(span["parent_id"], {}).get("name") == "oauth browser sign-in"]
    token = next(span for span in inner if span["name"] == "oauth token")
    assert token["attributes"]["oauth.step"] == "code exchange"
    assert token["attributes"]["oauth.grant_type"] == "authorization_code"
    assert "oauth registration" in {span["name"] for span in inner}
    text = json.dumps(spans)
    assert "access_token" not in text and "code_verifier" not in text


def test_console_exporter_writes_to_stderr_never_stdout(server, clients):
    proxy = clients("--transport", "streamablehttp", server.base + "/mcp",
                    env={**NO_OTEL, "OTEL_TRACES_EXPORTER": "console"})
    proxy.handshake()
    assert proxy.call(echo(1))["id"] == 1  # recv() asserts every stdout line is JSON-RPC
    assert proxy.close() == 0
    assert '"name": "tools/call echo"' in proxy.stderr()
    assert proxy.out.get(timeout=5) is None  # nothing else came on stdout


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=2)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=2), max_leaves=4)
META = JSON | st.dictionaries(st.sampled_from([*tracing.FIELDS, "x"]), JSON, max_size=3)


def without_context(meta: dict) -> dict:
    return {key: value for key, value in meta.items() if key not in tracing.FIELDS}


def test_hostile_meta_is_handed_on_untouched_never_an_error(server, client):
    proxy = client("--transport", "streamablehttp", server.base + "/mcp")
    proxy.handshake()
    ids = iter(range(100, 10_000))

    @settings(max_examples=40, deadline=None, database=None)
    @given(meta=META)
    def call(meta):
        message = echo(next(ids))
        message["params"]["_meta"] = meta
        answer = proxy.call(message)
        assert answer["id"] == message["id"] and "result" in answer, answer
        sent = sent_call(server.record, message["id"])["params"]["_meta"]
        if not isinstance(meta, dict):
            assert sent == meta  # not an object: as the client sent it, for the server to judge
            return
        assert without_context(sent) == without_context(meta)
        assert sent["traceparent"].startswith("00-")  # a context, ours or the remote proxy's

    call()
    assert "Traceback" not in proxy.stderr()


@pytest.mark.parametrize(("url", "bare"), [
    ("https://user:pw@example.com:8443/mcp?key=secret#top", "https://example.com:8443/mcp"),
    ("http://[::1]:9/sse?x=1", "http://[::1]:9/sse"),
    ("https://example.com", "https://example.com"),
    ("http://example.com:99999/x", "(not a URL)"),
])
def test_a_url_on_a_span_holds_no_secret(url, bare):
    assert tracing.bare_url(url) == bare


def test_off_the_links_and_the_steps_are_the_plain_ones():
    assert not tracing.on
    assert remote_class("sse") is SseUpstream
    assert remote_class("auto") is remote_class("streamablehttp") is StreamableUpstream
    assert traced("x", before=lambda: 1 / 0)(lambda: 42)() == 42  # nothing asked of it
